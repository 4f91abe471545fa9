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

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from core.eval.metrics import (
    CONFIDENCE,
    DEFAULT_N_BOOT,
    OVERALL,
    BootstrapInterval,
    MetricsInputError,
    auroc,
    study_table,
)
from core.store.artifacts import ModelArtifacts

__all__ = ["paired_studies", "paired_auroc_difference", "paired_mean_difference", "compare_tables", "compare_models"]


def paired_studies(studies_a: pd.DataFrame, studies_b: pd.DataFrame) -> pd.DataFrame:
    """The studies both tables hold, one row each sorted by study_path: A's columns plus B's
    probability (``probability_b``).

    Raises:
        MetricsInputError: the tables disagree on a study's label, or share no study.
    """
    paired = studies_a.merge(
        studies_b[["study_path", "label", "probability"]], on="study_path", suffixes=("", "_b"), validate="one_to_one"
    )
    if not (paired["label"] == paired["label_b"]).all():
        raise MetricsInputError("the two prediction tables disagree on a study's label")
    if paired.empty:
        raise MetricsInputError("the two models share no study")
    return paired.drop(columns=["label_b"]).sort_values("study_path", ignore_index=True)


def _difference(paired: pd.DataFrame) -> float | None:
    first, second = auroc(paired["label"], paired["probability"]), auroc(paired["label"], paired["probability_b"])
    return None if first is None or second is None else first - second


def _resampled_aurocs(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of every row (one resample each, both classes present): the Mann-Whitney statistic on
    average ranks, which equals sklearn's roc_auc_score ties included, for all resamples at once."""
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    positive_rank_sums = (rankdata(scores, axis=1) * labels).sum(axis=1)
    return (positive_rank_sums - positives * (positives + 1) / 2) / (positives * negatives)


def _difference_draws(paired: pd.DataFrame, n_boot: int, seed: int) -> np.ndarray:
    """AUROC(A) - AUROC(B) on each bootstrap resample of the paired studies (one-class resamples dropped).

    Studies are drawn like core.eval.metrics.bootstrap_ci draws them (one seeded generator, every index
    up front), but every resample's two AUROCs are computed at once: a thousand resamples take
    milliseconds, so the dashboard can afford them.
    """
    if n_boot < 1:
        raise MetricsInputError("n_boot must be at least 1.")
    labels = paired["label"].to_numpy(dtype=np.int64)
    draws = np.random.default_rng(seed).integers(0, len(labels), size=(n_boot, len(labels)))
    abnormal_drawn = labels[draws].sum(axis=1)
    draws = draws[(abnormal_drawn > 0) & (abnormal_drawn < len(labels))]
    drawn_labels = labels[draws]
    return _resampled_aurocs(drawn_labels, paired["probability"].to_numpy(dtype=float)[draws]) - _resampled_aurocs(
        drawn_labels, paired["probability_b"].to_numpy(dtype=float)[draws]
    )


def _interval(point: float | None, differences: np.ndarray, n_boot: int) -> BootstrapInterval:
    low = high = None
    if point is not None and differences.size:
        tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
        low, high = (float(v) for v in np.percentile(differences, [tail, 100.0 - tail]))
    return BootstrapInterval(point=point, low=low, high=high, n_boot=n_boot, n_skipped=n_boot - differences.size)


def _bootstrap_difference(paired: pd.DataFrame, n_boot: int, seed: int) -> BootstrapInterval:
    """AUROC(A) - AUROC(B) with a percentile interval over resamples of the paired studies."""
    point = _difference(paired)
    return _interval(point, _difference_draws(paired, n_boot, seed) if point is not None else np.empty(0), n_boot)


def paired_mean_difference(
    studies_a: pd.DataFrame, studies_b: pd.DataFrame, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> BootstrapInterval:
    """The mean over body parts of AUROC(A) - AUROC(B), with a paired percentile interval.

    The statistic of this project's adoption rules (docs/experiments.md: "mean of humerus and forearm
    study AUROC"): each part's studies are resampled within the part, and each resample's per-part
    differences are averaged.
    """
    paired = paired_studies(studies_a, studies_b)
    parts = [rows for _, rows in paired.groupby("study_type")]
    points = [point for rows in parts if (point := _difference(rows)) is not None]
    if len(points) < len(parts):
        return _interval(None, np.empty(0), n_boot)
    draws = [_difference_draws(rows, n_boot, seed + index) for index, rows in enumerate(parts)]
    kept = min(map(len, draws))
    return _interval(float(np.mean(points)), np.mean([d[:kept] for d in draws], axis=0), n_boot)


def paired_auroc_difference(
    studies_a: pd.DataFrame, studies_b: pd.DataFrame, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> BootstrapInterval:
    """AUROC(A) - AUROC(B) with a percentile interval over resamples of the studies both share.

    Both tables are study tables (:func:`core.eval.metrics.study_table`); studies present in only one
    are left out, and a study's label must agree between them.
    """
    return _bootstrap_difference(paired_studies(studies_a, studies_b), n_boot, seed)


def compare_tables(
    studies_a: pd.DataFrame, studies_b: pd.DataFrame, *, n_boot: int = DEFAULT_N_BOOT
) -> dict[str, dict]:
    """Per body part (and overall) of two study tables: studies compared, each model's AUROC, and the
    paired difference (A minus B) with its interval, as ``python -m core.compare`` prints them."""
    paired = paired_studies(studies_a, studies_b)
    groups = {OVERALL: paired} | dict(iter(paired.groupby("study_type")))
    return {
        group: {
            "studies": int(len(rows)),
            "abnormal": int(rows["label"].sum()),
            "auroc_a": auroc(rows["label"], rows["probability"]),
            "auroc_b": auroc(rows["label"], rows["probability_b"]),
            "difference": _bootstrap_difference(rows, n_boot, seed=0).as_json(),
        }
        for group, rows in groups.items()
    }


def compare_models(
    model_a: str, model_b: str, split: str = "valid", *, n_boot: int = DEFAULT_N_BOOT, directory: Path | None = None
) -> dict[str, dict]:
    """:func:`compare_tables` of two models' cached predictions of ``split``."""
    tables = []
    for model in (model_a, model_b):
        files = ModelArtifacts.of(model, directory)
        path = files.resolve(files.predictions(split))  # train_holdout may be the base model's
        if not path.is_file():
            raise FileNotFoundError(f"no cached predictions at {path}")
        tables.append(study_table(pd.read_csv(path)))
    return compare_tables(*tables, n_boot=n_boot)
