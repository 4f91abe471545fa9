"""Write data_samples/mura_index.csv: MURA valid/ studies worth showing, by official path only.

    python data_samples/make_mura_index.py [--mura-root PATH] [--model NAME] [--per-kind 3]

MURA's licence forbids shipping its images, so the index holds official study paths and the
reason each is interesting; the app shows the pictures only from a MURA folder the user has.
Rerun it after a model's cached evaluation changes. The reasons carry no numbers: the app shows each
study's probability and threshold live from the current model's cache, so a note cannot contradict them
(tests/test_curated_index.py checks the shipped index against the shipped model's cache). It picks:

* the model's most confidently wrong studies per trained body part (false positives and false
  negatives) and its most confident right ones, from ``weights/<model>/predictions_valid.csv``
  when that exists;
* studies with metal hardware, from a list checked by eye (MURA labels hardware "abnormal",
  and models lean on it: worth showing, not hiding);
* the studies of body parts the model was not trained on that are present in the folder;
* studies with a view that is almost entirely black (part of the release as published).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from core.data import mura
from core.data.imaging import load_radiograph
from core.eval.metrics import study_table
from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import weights_dir

__all__ = ["INDEX_FILE", "HARDWARE_STUDIES", "CONFIDENTLY_WRONG", "build_index", "main"]

INDEX_FILE = Path(__file__).resolve().parent / "mura_index.csv"
DEFAULT_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "mura" / "MURA-v1.1"
COLUMNS = ["study_path", "study_type", "label", "reason"]
#: Checked by eye in MURA v1.1 valid/ (candidates: views with 0.5-5 % saturated pixels on a dark
#: background; large burned-in markers were the false candidates and are left out).
HARDWARE_STUDIES = {
    "MURA-v1.1/valid/XR_FOREARM/patient11417/study1_positive/": "external fixator (metal hardware)",
    "MURA-v1.1/valid/XR_FOREARM/patient11423/study1_positive/": "external fixator, one fluoroscopic view",
    "MURA-v1.1/valid/XR_HUMERUS/patient11231/study1_positive/": "plate and screws (metal hardware)",
    "MURA-v1.1/valid/XR_HUMERUS/patient11617/study1_positive/": "plate and screws (metal hardware)",
    "MURA-v1.1/valid/XR_HUMERUS/patient11628/study1_positive/": "pins and wires (metal hardware)",
    "MURA-v1.1/valid/XR_HUMERUS/patient11633/study1_positive/": "long plate and screws (metal hardware)",
    "MURA-v1.1/valid/XR_HUMERUS/patient11638/study1_positive/": "intramedullary nail and screws (metal hardware)",
    "MURA-v1.1/valid/XR_HUMERUS/patient11652/study1_positive/": "plate and screws (metal hardware)",
    "MURA-v1.1/valid/XR_HUMERUS/patient11656/study1_positive/": "plate and screws (metal hardware)",
}
#: How a reason for a confidently wrong pick starts (the rest names the model and its call).
CONFIDENTLY_WRONG = "confidently wrong"
_BLACK_MEAN = 5.0  # a view whose mean grey level is below this is almost entirely black


def _model_picks(predictions: pd.DataFrame, thresholds: dict[str, float], per_kind: int, model: str) -> dict[str, str]:
    """Most confidently wrong (both ways) and most confidently right studies per body part, each
    reason naming the model whose cache picked it (another model may call the study otherwise)."""
    picks: dict[str, str] = {}
    studies = study_table(predictions)
    for study_type, group in studies.groupby("study_type"):
        threshold = thresholds.get(study_type, thresholds.get("default", 0.5))
        called = group["probability"] >= threshold
        kinds = [
            (
                group[~called & (group["label"] == 1)].nsmallest(per_kind, "probability"),
                f"{CONFIDENTLY_WRONG}: abnormal study {model} calls normal",
            ),
            (
                group[called & (group["label"] == 0)].nlargest(per_kind, "probability"),
                f"{CONFIDENTLY_WRONG}: normal study {model} calls abnormal",
            ),
            (
                group[called & (group["label"] == 1)].nlargest(1, "probability"),
                f"{model}'s most confident right call of an abnormal study",
            ),
            (
                group[~called & (group["label"] == 0)].nsmallest(1, "probability"),
                f"{model}'s most confident right call of a normal study",
            ),
        ]
        for rows, reason in kinds:
            for row in rows.itertuples():
                picks[row.study_path] = reason
    return picks


def build_index(root: Path, model: str = DEFAULT_MODEL, per_kind: int = 3) -> pd.DataFrame:
    """The curated table (study_path, study_type, label, reason), only studies present under ``root``."""
    images = mura.read_images(root, "valid")
    studies = images.groupby("study_path").agg(study_type=("study_type", "first"), label=("label", "first"))
    reasons: dict[str, list[str]] = {path: [] for path in studies.index}

    model_dir = weights_dir() / model
    card_path = model_dir / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    predictions_path = model_dir / "predictions_valid.csv"
    if predictions_path.is_file():
        for path, reason in _model_picks(
            pd.read_csv(predictions_path), card.get("thresholds", {}), per_kind, model
        ).items():
            if path in reasons:
                reasons[path].append(reason)
    for path, reason in HARDWARE_STUDIES.items():
        if path in reasons:
            reasons[path].append(reason)
    trained = set(card.get("training_data", {}).get("all", {})) or {"XR_HUMERUS", "XR_FOREARM"}
    for path, study_type in studies["study_type"].items():
        if study_type not in trained:
            reasons[path].append(f"{study_type.removeprefix('XR_').lower()}: a body part the model was not trained on")
    for row in images.itertuples():
        if load_radiograph(mura.image_file(root, row.path)).pixels.mean() < _BLACK_MEAN:
            reasons[row.study_path].append(f"{row.path.rsplit('/', 1)[1]} is almost entirely black (as released)")

    table = studies.assign(reason=pd.Series({p: "; ".join(r) for p, r in reasons.items()}))
    table = table[table["reason"] != ""].reset_index(names="study_path")
    return table[COLUMNS].sort_values("study_path").reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", default=os.environ.get("MURA_ROOT") or str(DEFAULT_ROOT))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--per-kind", type=int, default=3, help="confidently wrong studies per kind and body part")
    args = parser.parse_args(argv)
    try:
        root = mura.resolve_root(args.mura_root)
    except mura.MuraRootError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = build_index(root, args.model, args.per_kind)
    table.to_csv(INDEX_FILE, index=False)
    print(f"wrote {len(table)} studies to {INDEX_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
