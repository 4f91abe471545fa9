"""Scope head v2 candidates A, B and C (docs/experiments.md, "Scope head v2"): the out-of-fold rates on
train/ that choose among them, then, with --valid, their MURA valid/ figures (for the record).

Reads the member-0 features that `python -m core.scope` caches in runs/scope_features (run it first):

    python scripts/scope_candidates.py [--valid] [--fracatlas-root ../shared/fracatlas] [--mura-root PATH]

A: humerus, forearm (MURA), hand/wrist, shoulder, leg/hip (FracAtlas); B: A + MURA end crops as
"joint close-up"; C: B without FracAtlas "hand" (a mix of hand, wrist and forearm views); D (v3): B with
every MURA train/ humerus and forearm view, not 1,000 (--mura-root computes their features once).
Rates of every candidate are over the rows all candidates score (B's 1,000 MURA views, its crops, FracAtlas).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

from core.data import fracatlas
from core.scoping.fit import _C

FEATURES = "runs/scope_features/mura_efficientnet_lite0/model/"
ALL_MURA = "mura_train_all.npz"
IN_SCOPE = ["humerus", "forearm"]
ATLAS_CLASSES = {"hand": "hand/wrist", "shoulder": "shoulder", "leg/hip": "other"}


def _predictor(features: np.ndarray, labels: np.ndarray):
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=_C, class_weight="balanced", max_iter=3000).fit(scaler.transform(features), labels)
    return lambda rows: pd.DataFrame(model.predict_proba(scaler.transform(rows)), columns=model.classes_)


def _outside(probabilities: pd.DataFrame) -> np.ndarray:
    return (1 - probabilities[IN_SCOPE].sum(axis=1)).to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--valid", action="store_true", help="also measure MURA valid/ (the test set)")
    parser.add_argument("--fracatlas-root", default="../shared/fracatlas")
    parser.add_argument("--mura-root", help="MURA v1.1 folder: compute D's extra train/ features if not cached")
    args = parser.parse_args()
    if args.mura_root:
        _cache_all_mura_train(args.mura_root)
    mura_sample, crops, atlas_cache = (
        np.load(FEATURES + f"{name}.npz") for name in ("mura_train", "mura_train_end_crops", "fracatlas")
    )
    root = fracatlas.resolve_root(args.fracatlas_root)
    atlas = fracatlas.read_images(root).set_index("file")
    atlas_files = ["images/" + p.split("/")[-1] for p in atlas_cache["paths"]]
    region = atlas.loc[atlas_files, "region"].to_numpy()
    atlas_groups = np.array(fracatlas.duplicate_groups(root, atlas_files))
    crop_patient = [p.split("/")[-3] for p in crops["paths"]]
    all_views = Path(FEATURES + ALL_MURA)

    report = {}
    for candidate in "ABCD" if all_views.is_file() else "ABC":
        mura_train = np.load(all_views) if candidate == "D" else mura_sample
        mura_part = np.array(["humerus" if "HUMERUS" in p else "forearm" for p in mura_train["paths"]])
        mura_patient = [p.split("/")[-3] for p in mura_train["paths"]]
        common = np.isin(mura_train["paths"], mura_sample["paths"])  # B's 1,000 views
        keep = region != "hand" if candidate == "C" else np.ones(len(region), bool)
        use_crops = candidate in "BCD"
        features = np.concatenate(
            [mura_train["features"], *([crops["features"]] if use_crops else []), atlas_cache["features"][keep]]
        )
        labels = np.array(
            list(mura_part)
            + ["joint close-up"] * (len(crop_patient) if use_crops else 0)
            + [ATLAS_CLASSES[r] for r in region[keep]]
        )
        groups = np.array(
            [f"m:{p}" for p in mura_patient + (crop_patient if use_crops else [])]
            + [f"a:{g}" for g in atlas_groups[keep]]
        )
        kind = np.array(
            ["mura"] * len(mura_part) + ["crop"] * (len(crop_patient) if use_crops else 0) + ["atlas"] * int(keep.sum())
        )
        oof = None
        for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=0).split(features, labels, groups):
            fold = _predictor(features[train], labels[train])(features[test])
            oof = pd.DataFrame(0.0, index=range(len(labels)), columns=fold.columns) if oof is None else oof
            oof.iloc[test] = fold.to_numpy()
        full = _predictor(features, labels)
        outside = _outside(oof)
        crop_outside = outside[kind == "crop"] if use_crops else _outside(full(crops["features"]))
        atlas_outside = np.zeros(len(region))
        atlas_outside[keep] = outside[kind == "atlas"]
        if not keep.all():  # C: FracAtlas hand is held out as a whole
            atlas_outside[~keep] = _outside(full(atlas_cache["features"][~keep]))
        humerus_share = (oof["humerus"] / oof[IN_SCOPE].sum(axis=1)).to_numpy()[kind == "mura"]
        rates = {
            "mura_kept_in_scope": float((outside[kind == "mura"][common] < 0.5).mean()),
            "end_crops_flagged": float((crop_outside >= 0.5).mean()),
            "fracatlas_shoulder_flagged": float((atlas_outside[region == "shoulder"] >= 0.5).mean()),
            "fracatlas_leg_hip_flagged": float((atlas_outside[region == "leg/hip"] >= 0.5).mean()),
        }
        result = {
            "selection_score": float(np.mean(list(rates.values()))),
            **rates,
            "fracatlas_hand_flagged": float((atlas_outside[region == "hand"] >= 0.5).mean()),
            "mura_humerus_vs_forearm": float(((humerus_share >= 0.5) == (mura_part == "humerus"))[common].mean()),
        }
        if args.valid:
            result |= _valid_figures(full)
        report[candidate] = result
    print(json.dumps(report, indent=1))


def _cache_all_mura_train(mura_root: str) -> None:
    """Member-0 features of every MURA train/ humerus and forearm view (D), beside the others."""
    from core.data import mura
    from core.model.checkpoint import load_model
    from core.model.prediction import configure_threads
    from core.scoping.fit import _features_of

    root = mura.resolve_root(mura_root)
    images = mura.read_images(root, "train")
    images = images[images["study_type"].isin(["XR_HUMERUS", "XR_FOREARM"])]
    configure_threads(1)  # one thread: this runs beside trainings
    _features_of(
        load_model("mura_efficientnet_lite0"),
        [mura.image_file(root, p) for p in images["path"]],
        Path(FEATURES + ALL_MURA),
        "MURA train, every humerus and forearm view",
    )


def _valid_figures(full) -> dict:
    valid = np.load(FEATURES + "mura_valid.npz")
    probabilities = full(valid["features"])
    study_type = np.array([p.split("/")[-4] for p in valid["paths"]])
    trained = np.isin(study_type, ["XR_HUMERUS", "XR_FOREARM"])
    outside = _outside(probabilities)
    is_humerus = study_type == "XR_HUMERUS"
    study = pd.Series([p.rsplit("/", 1)[0] for p in valid["paths"]])
    ratio = (probabilities["humerus"] / probabilities[IN_SCOPE].sum(axis=1))[trained].groupby(study[trained]).mean()
    truth = pd.Series(is_humerus[trained], index=study[trained]).groupby(level=0).first()
    return {
        "valid_kept_in_scope": float((outside[trained] < 0.5).mean()),
        "valid_humerus_vs_forearm_study": float(((ratio >= 0.5) == truth).mean()),
        "valid_other_parts_flagged": f"{int((outside[~trained] >= 0.5).sum())} of {int((~trained).sum())}",
        "valid_auroc_trained_vs_other_parts": float(roc_auc_score(~trained, outside)),
    }


if __name__ == "__main__":
    main()
