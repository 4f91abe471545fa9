"""Measure the joint-training cross-validation against the shipped one, by the rule
fixed in docs/experiments.md ("Joint training with FracAtlas"), from cached predictions only.

    python scripts/joint_outcome.py [--runs runs] [--out docs/joint_training/outcome.json]

Reads each finished fold ``runs/joint_cv4_f<k>`` (its MURA holdout and FracAtlas holdout predictions)
and the shipped model's out-of-fold predictions; compares them on the MURA studies the finished folds
held out (paired bootstrap of the mean of humerus and forearm study AUROC), applies the staged rule,
and reports FracAtlas fracture AUROC per region on the held-out folds beside the shipped model's
(which never saw FracAtlas) on the same images. Copies the folds' predictions beside the outcome:
predictions keyed by official path and FracAtlas file, no pixels.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from core.eval.comparison import compare_tables, paired_mean_difference
from core.eval.metrics import DEFAULT_N_BOOT, auroc, bootstrap_ci, study_table
from core.model.checkpoint import DEFAULT_MODEL
from core.model.training import FRACTURE_HOLDOUT
from core.store.artifacts import ModelArtifacts

FOLDS = 4
#: The staged rule (docs/experiments.md), fixed before any result.
ADOPTION_MARGIN = 0.010
FUTILITY_BELOW = 0.005


def _finished_folds(runs: Path, prefix: str) -> dict[int, ModelArtifacts]:
    folds = {k: ModelArtifacts(runs / f"{prefix}{k}") for k in range(FOLDS)}
    return {k: files for k, files in folds.items() if files.holdout_predictions.is_file()}


def _difference(table: pd.DataFrame) -> float | None:
    joint, shipped = auroc(table["label"], table["probability"]), auroc(table["label"], table["probability_shipped"])
    return None if joint is None or shipped is None else joint - shipped


_FRACTURE_STATISTICS = {
    "joint": lambda t: auroc(t["label"], t["probability"]),
    "shipped": lambda t: auroc(t["label"], t["probability_shipped"]),
    "difference": _difference,
}


def _fracture_rows(joint: pd.DataFrame, shipped: pd.DataFrame, n_boot: int) -> dict[str, dict]:
    """Fracture AUROC per region: the joint model's fracture output vs the shipped P(abnormal), paired
    on the same held-out images, resampling FracAtlas copy groups (a radiograph stored twice counts once)."""
    paired = joint.merge(shipped[["file", "probability"]], on="file", suffixes=("", "_shipped"), validate="1:1")
    table = pd.DataFrame(
        {
            "study_path": paired["duplicate_of"],
            "patient": paired["duplicate_of"],
            "study": paired["duplicate_of"],
            "study_type": paired["region"],
            "label": paired["fractured"],
            "probability": paired["probability"],
            "probability_shipped": paired["probability_shipped"],
        }
    )
    rows = {"upper limb": table} | dict(iter(table.groupby("study_type")))
    result = {}
    for region, rows_of in rows.items():
        intervals = {
            name: bootstrap_ci(rows_of, statistic, n_boot=n_boot, level="image").as_json()
            for name, statistic in _FRACTURE_STATISTICS.items()
        }
        result[region] = {
            "images": int(len(rows_of)),
            "fractured": int(rows_of["label"].sum()),
            "joint_fracture_output": intervals["joint"],
            "shipped_abnormal": intervals["shipped"],
            "joint_minus_shipped": intervals["difference"],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--prefix", default="joint_cv4_f")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the shipped cross-validation to compare with")
    parser.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT)
    parser.add_argument("--out", type=Path, default=Path("docs/joint_training/outcome.json"))
    args = parser.parse_args()
    folds = _finished_folds(args.runs, args.prefix)
    if not folds:
        raise SystemExit(f"no finished fold {args.runs}/{args.prefix}<k> (predictions_train_holdout.csv)")
    shipped_files = ModelArtifacts.of(args.model)
    joint = study_table(pd.concat([pd.read_csv(f.holdout_predictions) for f in folds.values()]))
    shipped = study_table(pd.read_csv(shipped_files.holdout_predictions))
    shipped = shipped[shipped["study_path"].isin(joint["study_path"])]
    per_part = compare_tables(joint, shipped, n_boot=args.n_boot)
    mean = paired_mean_difference(joint, shipped, n_boot=args.n_boot)
    if len(folds) == FOLDS:
        adopted = mean.point is not None and mean.point >= ADOPTION_MARGIN
        decision = "adopt: run MURA valid/ once" if adopted else "not adopted"
    elif sorted(folds) == [0, 1]:
        futile = mean.point is None or mean.point < FUTILITY_BELOW
        decision = "stop for futility: not adopted" if futile else "continue: train folds 2 and 3"
    else:
        decision = "no decision: the rule reads folds 0 and 1, or all four"
    fracture = _fracture_rows(
        pd.concat([pd.read_csv(f.predictions(FRACTURE_HOLDOUT)) for f in folds.values()]),
        pd.read_csv(shipped_files.predictions("fracatlas")),
        args.n_boot,
    )
    outcome = {
        "folds": sorted(folds),
        "mura_studies": int(len(joint)),
        "mura_study_auroc": {
            part: {
                "joint": row["auroc_a"],
                "shipped": row["auroc_b"],
                "studies": row["studies"],
                "joint_minus_shipped": row["difference"],
            }
            for part, row in per_part.items()
        },
        "mean_of_humerus_and_forearm_joint_minus_shipped": mean.as_json(),
        "rule": {
            "adoption_margin": ADOPTION_MARGIN,
            "futility_below_after_folds_0_1": FUTILITY_BELOW,
            "decision": decision,
        },
        "fracatlas_fracture_auroc_held_out": fracture,
        "best_epoch": {k: int(json.loads(f.card.read_text(encoding="utf-8"))["best_epoch"]) for k, f in folds.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(outcome, indent=2) + "\n", encoding="utf-8")
    for k, files in folds.items():
        for source in (files.holdout_predictions, files.predictions(FRACTURE_HOLDOUT), files.training_log):
            shutil.copyfile(source, args.out.parent / f"fold{k}_{source.name}")
    print(json.dumps(outcome, indent=2))


if __name__ == "__main__":
    main()
