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

from core.artifacts import ModelArtifacts
from core.metrics import DEFAULT_N_BOOT, OVERALL, BootstrapInterval, MetricsInputError, auroc, bootstrap_ci, study_table

__all__ = ["paired_auroc_difference", "compare_models", "main"]


def _paired(studies_a: pd.DataFrame, studies_b: pd.DataFrame) -> pd.DataFrame:
    """The studies both tables hold, one row each: A's columns plus B's probability (``probability_b``)."""
    paired = studies_a.merge(studies_b[["study_path", "label", "probability"]], on="study_path",
                             suffixes=("", "_b"), validate="one_to_one")
    if not (paired["label"] == paired["label_b"]).all():
        raise MetricsInputError("the two prediction tables disagree on a study's label")
    if paired.empty:
        raise MetricsInputError("the two models share no study")
    return paired.drop(columns=["label_b"])


def _difference(paired: pd.DataFrame) -> float | None:
    first, second = auroc(paired["label"], paired["probability"]), auroc(paired["label"], paired["probability_b"])
    return None if first is None or second is None else first - second


def _bootstrap_difference(paired: pd.DataFrame, n_boot: int, seed: int) -> BootstrapInterval:
    # One row per study, so resampling rows at the image level resamples studies.
    return bootstrap_ci(paired, _difference, n_boot=n_boot, seed=seed, level="image")


def paired_auroc_difference(
    studies_a: pd.DataFrame, studies_b: pd.DataFrame, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> BootstrapInterval:
    """AUROC(A) - AUROC(B) with a percentile interval over resamples of the studies both share.

    Both tables are study tables (:func:`core.metrics.study_table`); studies present in only one
    are left out, and a study's label must agree between them.
    """
    return _bootstrap_difference(_paired(studies_a, studies_b), n_boot, seed)


def compare_models(model_a: str, model_b: str, split: str = "valid", *, n_boot: int = DEFAULT_N_BOOT,
                   directory: Path | None = None) -> dict[str, dict]:
    """Per body part (and overall): studies compared, each model's AUROC, and the paired difference."""
    tables = []
    for model in (model_a, model_b):
        path = ModelArtifacts.of(model, directory).predictions(split)
        if not path.is_file():
            raise FileNotFoundError(f"no cached predictions at {path}")
        tables.append(study_table(pd.read_csv(path)))
    paired = _paired(*tables)
    groups = {OVERALL: paired} | dict(iter(paired.groupby("study_type")))
    return {
        group: {
            "studies": int(len(rows)),
            "auroc_a": auroc(rows["label"], rows["probability"]),
            "auroc_b": auroc(rows["label"], rows["probability_b"]),
            "difference": _bootstrap_difference(rows, n_boot, seed=0).as_json(),
        }
        for group, rows in groups.items()
    }


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.compare`` and print its report; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m core.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs=2, required=True, metavar=("A", "B"), help="two folders under weights/")
    parser.add_argument("--split", default="valid", help="valid (core.evaluate) or train_holdout (core.train)")
    parser.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT, help="bootstrap resamples for the intervals")
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
