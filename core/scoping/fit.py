"""Fitting the scope head (core.scope) and measuring it: out of fold on train/, then on MURA valid/,
FracAtlas and images that are not radiographs.

``python -m core.scope --mura-root DIR --fracatlas-root DIR`` runs :func:`fit_and_measure`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm import tqdm

from core.eval.metrics import auroc, bootstrap_ci, bootstrap_means
from core.model.checkpoint import LoadedModel
from core.scoping.head import (
    IN_SCOPE_STUDY_TYPES,
    JOINT_CLOSE_UP,
    SCOPE_CLASSES,
    ScopeAssessment,
    ScopeHead,
    image_features,
)
from core.store import atomic
from core.store.artifacts import ModelArtifacts

if TYPE_CHECKING:
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

__all__ = ["end_crops", "fit_head", "fit_and_measure", "non_radiograph_probes"]

_PCA_COMPONENTS = 64
_TYPICAL_QUANTILE = 0.99
_C = 0.05  # L2 strength: chosen for stable out-of-fold recall on train/ (not tuned on valid/)
END_CROP_FRACTION = 0.4
#: FracAtlas regions and the class each trains.
ATLAS_CLASSES = {"hand": "hand/wrist", "shoulder": "shoulder", "leg/hip": "other"}
#: The pre-registered rule for pre-selecting the body part (docs/experiments.md, "Scope head v2").
PRESELECT_MIN_STUDY_ACCURACY = 0.98
PRESELECT_MAX_OTHER_IN = 3


def _fit_parts(features: np.ndarray, labels: np.ndarray) -> tuple[StandardScaler, LogisticRegression, PCA, LedoitWolf]:
    # scikit-learn is imported only to fit: reading a head (every prediction) does not pay its import.
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    standardised = scaler.transform(features)
    classifier = LogisticRegression(C=_C, class_weight="balanced", max_iter=3000).fit(standardised, labels)
    pca = PCA(n_components=min(_PCA_COMPONENTS, *standardised.shape), random_state=0).fit(standardised)
    covariance = LedoitWolf().fit(pca.transform(standardised))
    return scaler, classifier, pca, covariance


def _as_head(
    parts: tuple[StandardScaler, LogisticRegression, PCA, LedoitWolf], threshold: float, source: str = "model"
) -> ScopeHead:
    scaler, classifier, pca, covariance = parts
    order = [list(classifier.classes_).index(c) for c in range(len(SCOPE_CLASSES))]
    return ScopeHead(
        SCOPE_CLASSES,
        scaler.mean_,
        scaler.scale_,
        classifier.coef_[order],
        classifier.intercept_[order],
        pca.mean_,
        pca.components_,
        covariance.location_,
        covariance.precision_,
        threshold,
        source,
    )


def fit_head(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    n_splits: int = 5,
    seed: int = 0,
    source: str = "model",
) -> tuple[ScopeHead, np.ndarray, np.ndarray]:
    """Fit on everything; return it with out-of-fold probabilities and distances.

    ``labels`` index :data:`SCOPE_CLASSES`; ``groups`` keep a patient (MURA) or a duplicate group
    (FracAtlas) in one fold. The distance threshold is the 99th percentile of out-of-fold
    distances, so it is not fitted to the very images that set it.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if set(np.unique(labels)) != set(range(len(SCOPE_CLASSES))):
        raise ValueError("every scope class needs training images")
    oof_probabilities = np.zeros((len(labels), len(SCOPE_CLASSES)))
    oof_distances = np.zeros(len(labels))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train_index, test_index in folds.split(features, labels, groups):
        fold_head = _as_head(_fit_parts(features[train_index], labels[train_index]), np.inf, source)
        oof_probabilities[test_index] = fold_head.probabilities(features[test_index])
        oof_distances[test_index] = fold_head.distances(features[test_index])
    threshold = float(np.quantile(oof_distances, _TYPICAL_QUANTILE))
    return _as_head(_fit_parts(features, labels), threshold, source), oof_probabilities, oof_distances


def _load_pixels(paths: Sequence[Path]) -> list[np.ndarray]:
    from core.data.imaging import load_radiograph

    return [load_radiograph(path).pixels for path in paths]


def end_crops(pixels: np.ndarray, fraction: float = END_CROP_FRACTION) -> list[np.ndarray]:
    """Both ends of a radiograph along its long side, ``fraction`` of it each: from a whole humerus or
    forearm view, a close view of the wrist, elbow or shoulder in MURA's own look (the "joint close-up"
    examples; which end is which joint is not known, and need not be)."""
    height, width = pixels.shape[:2]
    if height >= width:
        rows = max(1, round(fraction * height))
        return [pixels[:rows], pixels[height - rows :]]
    cols = max(1, round(fraction * width))
    return [pixels[:, :cols], pixels[:, width - cols :]]


def _features_of(
    loaded: LoadedModel,
    paths: Sequence[Path],
    cache: Path | None,
    desc: str,
    source: str = "model",
    *,
    crops: bool = False,
) -> np.ndarray:
    """Features of image files (or, with ``crops``, of both end crops of each, in that order), cached
    (features and names only, never pixels) in ``cache`` when given."""
    names = [f"{p}#{end}" for p in paths for end in "ab"] if crops else [str(p) for p in paths]
    known = _cached_rows(cache.parent) if cache is not None else {}
    # Rows any cache of this folder (same model and feature source) already holds are not recomputed.
    missing = [p for p in paths if (f"{p}#a" if crops else str(p)) not in known]
    step = 32
    for start in tqdm(range(0, len(missing), step), desc=desc, unit="batch", disable=not missing):
        chunk = missing[start : start + step]
        images = _load_pixels(chunk)
        if crops:
            images = [crop for image in images for crop in end_crops(image)]
        rows = image_features(loaded, images, source=source)
        chunk_names = [f"{p}#{end}" for p in chunk for end in "ab"] if crops else [str(p) for p in chunk]
        known.update(zip(chunk_names, rows, strict=True))
    features = np.stack([known[name] for name in names]) if names else np.zeros((0, 0), np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, paths=np.array(names), features=features)
    return features


def _cached_rows(folder: Path) -> dict[str, np.ndarray]:
    """Every feature row cached in ``folder``, by image (or crop) name."""
    rows: dict[str, np.ndarray] = {}
    for cache in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        with np.load(cache, allow_pickle=False) as data:
            if {"paths", "features"} <= set(data.files):
                rows.update(zip(data["paths"].tolist(), data["features"], strict=True))
    return rows


def _grey(image: np.ndarray) -> np.ndarray:
    """Any sample picture as uint8 greyscale stretched to 0..255 (a colour upload is flagged before the
    head runs, so the head must cope with the grey version)."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    image = image.astype(np.float64)
    low, high = float(image.min()), float(image.max())
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    return ((image - low) / (high - low) * 255).round().astype(np.uint8)


def non_radiograph_probes() -> dict[str, np.ndarray]:
    """105 greyscale images that are not radiographs, made offline and the same every time: the sample
    pictures bundled with scikit-image (photographs, micrographs, a telescope field, a retina, a CT
    phantom, text) and scikit-learn, drawn pages, charts, a screenshot, noise and blanks; each as is,
    inverted (bright on dark, like a radiograph) and centre-cropped. They measure what the head makes of
    uploads that are not radiographs; the head never trains on them."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    bases = {}
    for name in (
        "astronaut",
        "camera",
        "cat",
        "coffee",
        "coins",
        "colorwheel",
        "grass",
        "gravel",
        "brick",
        "horse",
        "hubble_deep_field",
        "immunohistochemistry",
        "logo",
        "moon",
        "page",
        "rocket",
        "text",
        "clock",
        "cell",
        "binary_blobs",
        "checkerboard",
        "retina",
        "shepp_logan_phantom",
    ):
        picture = skimage.data.binary_blobs(rng=0) if name == "binary_blobs" else getattr(skimage.data, name)()
        bases[f"{name} (scikit-image)"] = _grey(picture)
    for i, photo in enumerate(load_sample_images().images):
        bases[f"photo {i + 1} (scikit-learn)"] = _grey(photo)
    rng = np.random.default_rng(0)
    for size, (w, h) in enumerate([(400, 520), (600, 800), (300, 300)]):
        page = Image.new("L", (w, h), 250)
        draw = ImageDraw.Draw(page)
        for line in range(h // 22):
            draw.text((16, 12 + 20 * line), "Lorem ipsum dolor sit amet, consectetur adipiscing elit " * 3, fill=20)
        bases[f"text page {size + 1}"] = np.asarray(page)
    chart = Image.new("L", (480, 360), 255)
    draw = ImageDraw.Draw(chart)
    for bar in range(8):
        draw.rectangle((30 + 55 * bar, 330 - 35 * (bar % 5 + 1), 70 + 55 * bar, 330), fill=60 + 20 * bar)
    bases["bar chart"] = np.asarray(chart)
    plot = Image.new("L", (480, 360), 255)
    draw = ImageDraw.Draw(plot)
    xs = np.linspace(20, 460, 60)
    draw.line(list(zip(xs, 180 + 120 * np.sin(xs / 40), strict=True)), fill=0, width=3)
    draw.line([(20, 340), (460, 340)], fill=0, width=2)
    draw.line([(20, 20), (20, 340)], fill=0, width=2)
    bases["line chart"] = np.asarray(plot)
    ui = Image.new("L", (640, 400), 235)
    draw = ImageDraw.Draw(ui)
    draw.rectangle((0, 0, 640, 40), fill=60)
    for row in range(6):
        draw.rectangle((20, 60 + 55 * row, 620, 100 + 55 * row), outline=120, fill=250)
        draw.text((30, 72 + 55 * row), f"Setting {row + 1}: value {row * 7}", fill=30)
    bases["screenshot"] = np.asarray(ui)
    bases["uniform noise"] = rng.integers(0, 256, (320, 320), dtype=np.uint8)
    coarse = Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8))
    bases["smooth noise"] = np.asarray(coarse.resize((320, 320), Image.Resampling.BICUBIC))
    bases["gradient"] = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (320, 1))
    bases["blank page"] = np.full((320, 320), 255, dtype=np.uint8)
    probes = {}
    for name, image in bases.items():
        probes[name] = image
        probes[f"{name}, inverted"] = 255 - image
        h, w = image.shape
        probes[f"{name}, centre crop"] = image[h // 4 : h - h // 4, w // 4 : w - w // 4]
    return probes


def _sample_per_class(table: pd.DataFrame, column: str, per_class: int) -> pd.DataFrame:
    """At most ``per_class`` rows of each value of ``column``, a seeded sample kept in file order."""
    sampled = table.groupby(column, group_keys=False).apply(
        lambda rows: rows.sample(n=min(per_class, len(rows)), random_state=0)
    )
    return table.loc[sorted(sampled.index)].reset_index(drop=True)


def fit_and_measure(
    model: str,
    mura_root: str | Path,
    fracatlas_root: str | Path,
    *,
    per_class: int,
    features: str,
    feature_cache: Path,
    n_boot: int,
) -> tuple[dict, ModelArtifacts]:
    """Fit the head, measure it, and write both to the model's folder: (the measurements, the folder's files)."""
    from core.data import fracatlas, mura
    from core.model.checkpoint import load_model
    from core.model.prediction import configure_threads

    configure_threads()
    loaded = load_model(model)
    cache = feature_cache / loaded.name / features
    source = features
    mura_root = mura.resolve_root(mura_root)
    atlas_root = fracatlas.resolve_root(fracatlas_root)

    def cached(paths: Sequence[Path], name: str, desc: str, crops: bool = False) -> np.ndarray:
        return _features_of(loaded, paths, cache / f"{name}.npz", desc, source=source, crops=crops)

    mura_train = mura.read_images(mura_root, "train")
    mura_train = _sample_per_class(
        mura_train[mura_train["study_type"].isin(["XR_HUMERUS", "XR_FOREARM"])], "study_type", per_class
    )
    mura_files = [mura.image_file(mura_root, p) for p in mura_train["path"]]
    atlas = fracatlas.read_images(atlas_root)
    atlas_train = _sample_per_class(
        atlas[atlas["region"].isin(list(ATLAS_CLASSES))].reset_index(drop=True), "region", per_class
    )
    atlas_files = [fracatlas.image_file(atlas_root, f) for f in atlas_train["file"]]
    atlas_groups = [f"atlas:{g}" for g in fracatlas.duplicate_groups(atlas_root, atlas_train["file"].tolist())]

    mura_features = cached(mura_files, "mura_train", "MURA train")
    crop_features = cached(mura_files, "mura_train_end_crops", "MURA train end crops", crops=True)
    atlas_features = cached(atlas_files, "fracatlas", "FracAtlas")
    mura_labels = [t.removeprefix("XR_").lower() for t in mura_train["study_type"]]
    truth = np.array(
        mura_labels + [JOINT_CLOSE_UP] * len(crop_features) + [ATLAS_CLASSES[r] for r in atlas_train["region"]]
    )
    patients = [f"mura:{p}" for p in mura_train["patient"]]
    groups = np.array(patients + [g for g in patients for _ in "ab"] + atlas_groups)
    head, oof_probabilities, oof_distances = fit_head(
        np.concatenate([mura_features, crop_features, atlas_features]),
        np.array([SCOPE_CLASSES.index(t) for t in truth]),
        groups,
        source=source,
    )
    oof = _Scored.of(head, oof_probabilities, oof_distances)
    atlas_scored = oof.tail(len(atlas_train))  # FracAtlas comes last: its out-of-fold rows are held out

    valid = mura.read_images(mura_root, "valid")
    valid_scored = _Scored.apply(
        head, cached([mura.image_file(mura_root, p) for p in valid["path"]], "mura_valid", "MURA valid (measured only)")
    )
    probes = non_radiograph_probes()
    probe_scored = _Scored.apply(head, image_features(loaded, list(probes.values()), source=source))

    metrics = _measure(
        head,
        truth,
        oof,
        valid,
        valid_scored,
        atlas_train,
        atlas_scored,
        atlas_groups,
        list(probes),
        probe_scored,
        n_boot,
    )
    head = replace(head, preselect=metrics["rule"]["preselect"])
    metrics["fitted_on"] = {
        "features": source,
        "classes": list(SCOPE_CLASSES),
        "mura_train_images": len(mura_train),
        "mura_train_end_crops": len(crop_features),
        "end_crop_fraction": END_CROP_FRACTION,
        "fracatlas_images": len(atlas_train),
    }
    files = ModelArtifacts(loaded.directory)
    head.save(files.scope_head)
    atomic.write_text(files.scope_metrics, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return metrics, files


@dataclass(frozen=True)
class _Scored:
    """Per-image head output: the call the app would make, whether it is flagged, and its scope score."""

    probabilities: np.ndarray
    calls: np.ndarray
    flagged: np.ndarray
    scores: np.ndarray
    classes: tuple[str, ...]

    @classmethod
    def of(cls, head: ScopeHead, probabilities: np.ndarray, distances: np.ndarray) -> _Scored:
        assessments = [
            ScopeAssessment(dict(zip(head.classes, row.tolist(), strict=True)), float(d), head.distance_threshold)
            for row, d in zip(probabilities, distances, strict=True)
        ]
        calls = ["unusual" if not a.typical else "uncertain" if not a.confident else a.body_part for a in assessments]
        return cls(
            np.asarray(probabilities),
            np.array(calls, dtype=object),
            np.array([a.out_of_scope for a in assessments], dtype=bool),
            np.array([a.scope_score for a in assessments]),
            head.classes,
        )

    @classmethod
    def apply(cls, head: ScopeHead, features: np.ndarray) -> _Scored:
        return cls.of(head, head.probabilities(features), head.distances(features))

    def tail(self, n: int) -> _Scored:
        """The last ``n`` rows."""
        return _Scored(self.probabilities[-n:], self.calls[-n:], self.flagged[-n:], self.scores[-n:], self.classes)

    def humerus_over_forearm(self) -> np.ndarray:
        """P(humerus) / (P(humerus) + P(forearm)): the body-part call between the two trained parts."""
        humerus, forearm = (self.probabilities[:, self.classes.index(c)] for c in ("humerus", "forearm"))
        return humerus / np.maximum(humerus + forearm, 1e-12)


def _auroc_ci(scores: np.ndarray, outside: np.ndarray, groups: Sequence[str], n_boot: int) -> dict:
    """Out-of-scope AUROC (higher score = further out) with a bootstrap interval resampling groups
    (a MURA study, a FracAtlas duplicate group, one probe picture and its variants)."""
    # The AUROC only ranks: s / (1 + s) maps scores (>= 0, unbounded) into [0, 1) for the metrics module.
    table = pd.DataFrame(
        {
            "study_path": list(groups),
            "label": outside.astype(int),
            "probability": scores / (1 + scores),
            "study_type": "-",
            "patient": list(groups),
            "study": list(groups),
        }
    )
    interval = bootstrap_ci(table, lambda t: auroc(t["label"], t["probability"]), n_boot=n_boot, level="image")
    return interval.as_json() | {"inside": int((~outside).sum()), "outside": int(outside.sum())}


def _share_ci(hits: np.ndarray, n_boot: int) -> dict:
    interval = bootstrap_means(hits.astype(float)[:, None], names=["share"], n_boot=n_boot)["share"]
    return interval.as_json() | {"hits": int(hits.sum()), "of": int(hits.size)}


def _counts(truth: Iterable[str], calls: Iterable[str]) -> dict[str, dict[str, int]]:
    table = pd.crosstab(pd.Series(list(truth), name="truth"), pd.Series(list(calls), name="call"))
    return {str(t): {str(k): int(v) for k, v in row.items() if v} for t, row in table.iterrows()}


def _measure(
    head: ScopeHead,
    truth: np.ndarray,
    oof: _Scored,
    valid: pd.DataFrame,
    valid_scored: _Scored,
    atlas: pd.DataFrame,
    atlas_scored: _Scored,
    atlas_groups: Sequence[str],
    probe_names: Sequence[str],
    probe_scored: _Scored,
    n_boot: int,
) -> dict:
    """Everything scope_metrics.json reports: out of fold on train/, on MURA valid/ (measured once per
    head), on held-out FracAtlas and on the non-radiograph probes; the scope targets (SCOPE_TARGETS) with bootstrap
    intervals; and the pre-registered rule's outcome (docs/experiments.md)."""
    trained_types = valid["study_type"].isin(list(IN_SCOPE_STUDY_TYPES.values())).to_numpy()
    other = ~trained_types
    study_paths = (valid["path"].str.rsplit("/", n=1).str[0]).to_numpy()
    is_humerus = (valid["study_type"] == "XR_HUMERUS").to_numpy()
    # Humerus vs forearm, per study: the mean over its views of P(humerus) / (P(humerus) + P(forearm)).
    ratio = pd.Series(valid_scored.humerus_over_forearm()[trained_types]).groupby(study_paths[trained_types]).mean()
    study_is_humerus = pd.Series(is_humerus[trained_types]).groupby(study_paths[trained_types]).first()
    image_right = (valid_scored.humerus_over_forearm()[trained_types] >= 0.5) == is_humerus[trained_types]
    study_right = ((ratio >= 0.5) == study_is_humerus).to_numpy()

    leg = (atlas["region"] == "leg/hip").to_numpy()
    upper = ~leg
    probe_groups = [f"probe:{name.split(',')[0]}" for name in probe_names]
    valid_groups = [f"mura:{p}" for p in study_paths]
    # Strict: in scope = the two trained body parts (MURA valid/ humerus and forearm); out = everything else.
    strict_scores = np.concatenate([valid_scored.scores, atlas_scored.scores, probe_scored.scores])
    strict_outside = np.concatenate([other, np.ones(len(atlas), bool), np.ones(len(probe_names), bool)])
    strict_groups = valid_groups + list(atlas_groups) + probe_groups
    # The original target's reading: held-out FracAtlas upper limb (hand, shoulder) counted in scope too.
    issue_outside = np.concatenate([other, leg, np.ones(len(probe_names), bool)])

    kept = ~valid_scored.flagged[trained_types]
    other_left_in = int((~valid_scored.flagged[other]).sum())
    preselect = bool(study_right.mean() >= PRESELECT_MIN_STUDY_ACCURACY and other_left_in <= PRESELECT_MAX_OTHER_IN)
    oof_mura = np.isin(truth, list(IN_SCOPE_STUDY_TYPES))
    summary = {
        "body_part_accuracy_humerus_vs_forearm_study": _share_ci(study_right, n_boot),
        "body_part_accuracy_humerus_vs_forearm_image": _share_ci(image_right, n_boot),
        "mura_valid_humerus_forearm_kept_in_scope": _share_ci(kept, n_boot),
        "mura_valid_other_parts_flagged": {"hits": int(valid_scored.flagged[other].sum()), "of": int(other.sum())},
        "out_of_scope_auroc": _auroc_ci(strict_scores, strict_outside, strict_groups, n_boot),
        "out_of_scope_auroc_issue_definition": _auroc_ci(strict_scores, issue_outside, strict_groups, n_boot),
        "fracatlas_leg_hip_flagged_held_out": _share_ci(atlas_scored.flagged[leg], n_boot),
        "fracatlas_upper_limb_flagged_held_out": _share_ci(atlas_scored.flagged[upper], n_boot),
        "non_radiograph_probes_flagged": {"hits": int(probe_scored.flagged.sum()), "of": len(probe_names)},
        "out_of_fold_recall": {c: float(np.mean(oof.calls[truth == c] == c)) for c in head.classes},
        "out_of_fold_mura_kept_in_scope": float(np.mean(~oof.flagged[oof_mura])),
    }
    return {
        "summary": summary,
        "rule": {
            "text": (
                "pre-select the body part only if, on MURA valid/, study-level humerus-vs-forearm accuracy "
                f">= {PRESELECT_MIN_STUDY_ACCURACY} and at most {PRESELECT_MAX_OTHER_IN} of the other-part "
                "views are left in scope (docs/experiments.md, fixed before measuring)"
            ),
            "study_accuracy": float(study_right.mean()),
            "other_parts_left_in_scope": other_left_in,
            "preselect": preselect,
        },
        "distance_threshold": head.distance_threshold,
        "out_of_fold_calls": _counts(truth, oof.calls),
        "mura_valid_calls": _counts(valid["study_type"], valid_scored.calls),
        "fracatlas_held_out_calls": _counts(atlas["region"], atlas_scored.calls),
        "mura_valid_other_part_views": [
            {"path": p, "study_type": t, "call": c, "flagged": bool(f), "scope_score": round(float(score), 4)}
            for p, t, c, f, score, o in zip(
                valid["path"],
                valid["study_type"],
                valid_scored.calls,
                valid_scored.flagged,
                valid_scored.scores,
                other,
                strict=True,
            )
            if o
        ],
        "non_radiograph_probes": {
            name: {"call": c, "flagged": bool(f)}
            for name, c, f in zip(probe_names, probe_scored.calls, probe_scored.flagged, strict=True)
        },
    }
