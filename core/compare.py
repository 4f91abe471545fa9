"""Compare two models on the studies both have cached predictions for.

    python -m core.compare --models A B [--split valid] [--n-boot 2000]

Prints, per body part and overall, each model's study AUROC and the paired bootstrap interval
of the difference (A minus B). Paired: every resample draws the same studies for both models, so
what they share (which studies are hard) cancels, and the interval of the difference is much
narrower than the two separate AUROC intervals suggest. It reads only cached predictions:
``--split valid`` what core.evaluate wrote, ``--split train_holdout`` what core.train or
core.ensemble wrote (compared on the training studies both held out). No model runs here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from core.metrics import OVERALL, BootstrapInterval, MetricsInputError, auroc, bootstrap_ci, study_table
from core.models import weights_dir

__all__ = ["paired_auroc_difference", "compare_models", "main"]


def paired_auroc_difference(
    studies_a: pd.DataFrame, studies_b: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0
) -> BootstrapInterval:
    """AUROC(A) - AUROC(B) with a percentile interval over resamples of the studies both share.

    Both tables are study tables (:func:`core.metrics.study_table`); studies present in only one
    are left out, and a study's label must agree between them.
    """
    paired = studies_a.merge(studies_b[["study_path", "label", "probability"]], on="study_path",
                             suffixes=("", "_b"), validate="one_to_one")
    if not (paired["label"] == paired["label_b"]).all():
        raise MetricsInputError("the two prediction tables disagree on a study's label")
    if paired.empty:
        raise MetricsInputError("the two models share no study")

    def difference(table: pd.DataFrame) -> float | None:
        labels = table["label"].to_numpy()
        first, second = auroc(labels, table["probability"]), auroc(labels, table["probability_b"])
        return None if first is None or second is None else first - second

    # One row per study, so resampling rows at the image level resamples studies.
    return bootstrap_ci(paired.drop(columns=["label_b"]), difference, n_boot=n_boot, seed=seed, level="image")


def compare_models(model_a: str, model_b: str, split: str = "valid", *, n_boot: int = 1000,
                   directory: Path | None = None) -> dict[str, dict]:
    """Per body part (and overall): studies compared, each model's AUROC, and the paired difference."""
    directory = directory or weights_dir()
    tables = []
    for model in (model_a, model_b):
        path = directory / model / f"predictions_{split}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"no cached predictions at {path}")
        tables.append(study_table(pd.read_csv(path)))
    shared = set(tables[0]["study_path"]) & set(tables[1]["study_path"])
    studies_a, studies_b = (t[t["study_path"].isin(shared)] for t in tables)
    groups = {OVERALL: studies_a} | dict(iter(studies_a.groupby("study_type")))
    report = {}
    for group, rows in groups.items():
        others = studies_b[studies_b["study_path"].isin(rows["study_path"])]
        labels = rows["label"].to_numpy()
        aligned_b = others.set_index("study_path").loc[rows["study_path"], "probability"].to_numpy()
        report[group] = {
            "studies": int(len(rows)),
            "auroc_a": auroc(labels, rows["probability"]),
            "auroc_b": auroc(labels, aligned_b),
            "difference": paired_auroc_difference(rows, others, n_boot=n_boot).as_json(),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs=2, required=True, metavar=("A", "B"), help="two folders under weights/")
    parser.add_argument("--split", default="valid", help="valid (core.evaluate) or train_holdout (core.train)")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        report = compare_models(*args.models, args.split, n_boot=args.n_boot)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
