"""Evaluation of MURA predictions: study aggregation, ROC/PR, confusion and Cohen's kappa at a
threshold, bootstrap confidence intervals, calibration, and the JSON summary the dashboard reads.

Input is a predictions table with one row per image: ``path`` (official MURA path; or
``study_path`` directly), ``study_type``, ``patient``, ``study``, ``label`` (1 = abnormal) and
``probability`` (P(abnormal)). A study's probability is the mean of its views' probabilities, as in
the MURA paper. Every curve, AUC, kappa and calibration curve is scikit-learn's; this module only
arranges inputs, resamples studies and turns undefined values into ``None``.

Thresholds are either one float or a mapping from study type to float, optionally with a
``"default"`` entry for types it does not name (the shape of the model card's ``thresholds``).
A case is called abnormal when ``probability >= threshold``.

Example:
    >>> summary = summarise(predictions, {"XR_HUMERUS": 0.45, "XR_FOREARM": 0.5}, n_boot=1000)
    >>> sorted(summary["study"]["XR_HUMERUS"]["kappa"])
    ['high', 'low', 'n_skipped', 'point']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc as area_under_curve
from sklearn.metrics import (
    average_precision_score,
    cohen_kappa_score,
    precision_recall_curve,
    roc_curve,
)

__all__ = [
    "LEVELS",
    "CONFIDENCE",
    "DEFAULT_N_BOOT",
    "DEFAULT_THRESHOLD_KEY",
    "MetricsInputError",
    "Thresholds",
    "Statistic",
    "RocCurve",
    "PrCurve",
    "Confusion",
    "BootstrapInterval",
    "format_interval",
    "study_table",
    "row_thresholds",
    "roc_curve_points",
    "pr_curve_points",
    "auroc",
    "confusion_at",
    "confusion_by_type",
    "bootstrap_ci",
    "bootstrap_cis",
    "bootstrap_means",
    "calibration",
    "summarise",
]

LEVELS = ("image", "study")
OVERALL = "overall"
CONFIDENCE = 0.95
#: Bootstrap resamples for cached intervals (core.evaluate, core.compare and their ``--n-boot``).
DEFAULT_N_BOOT = 1000


_IMAGE_COLUMNS = ("study_type", "patient", "study", "label", "probability")
_STUDY_COLUMNS = ["study_path", "study_type", "patient", "study", "label", "probability", "n_views"]

Thresholds = Mapping[str, float] | float
#: The thresholds entry for study types a mapping does not name (a model card's ``thresholds`` carry one).
DEFAULT_THRESHOLD_KEY = "default"
Statistic = Callable[[pd.DataFrame], float | None]
"""A statistic of a (resampled) image or study table; ``None`` where it is undefined."""
_Measure = Callable[[np.ndarray], Mapping[str, float | None]]
"""Named statistics of the rows at the given positions of a level table."""


class MetricsInputError(ValueError):
    """The predictions or thresholds cannot be evaluated; the message says what to fix."""


@dataclass(frozen=True, eq=False)
class RocCurve:
    """sklearn's ROC curve; empty arrays and ``auc=None`` when one class is absent.

    ``thresholds[0]`` is +inf (sklearn's convention: the point where nothing is called abnormal).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float | None


@dataclass(frozen=True, eq=False)
class PrCurve:
    """sklearn's precision-recall curve (``thresholds`` is one shorter than ``precision``)."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    average_precision: float | None


@dataclass(frozen=True)
class Confusion:
    """Counts and rates at one operating point; a rate is ``None`` where its denominator is 0."""

    tn: int
    fp: int
    fn: int
    tp: int
    sensitivity: float | None
    specificity: float | None
    kappa: float | None
    accuracy: float | None

    @property
    def n(self) -> int:
        """All cases counted at this operating point, the denominator of accuracy."""
        return self.tn + self.fp + self.fn + self.tp


@dataclass(frozen=True)
class BootstrapInterval:
    """Point estimate with a percentile interval; unpacks as ``(point, low, high)``.

    ``n_skipped`` counts resamples left out: those with a single class, where the statistic is
    undefined, and those where it returned ``None``.
    """

    point: float | None
    low: float | None
    high: float | None
    n_boot: int
    n_skipped: int
    confidence: float = CONFIDENCE

    def __iter__(self) -> Iterator[float | None]:
        return iter((self.point, self.low, self.high))

    def as_json(self) -> dict[str, float | int | None]:
        """The interval for a metrics file, with ``n_skipped`` so readers see how many resamples were dropped."""
        return {"point": self.point, "low": self.low, "high": self.high, "n_skipped": self.n_skipped}


def format_interval(interval: Mapping[str, Any] | None, digits: int = 3) -> str:
    """An interval as :meth:`BootstrapInterval.as_json` stores it, as text: '0.812 (0.751–0.866)'; the
    point alone when the interval is undefined; '—' without a point. (The dashboard's tables and the PDF
    report both write intervals so; the report folds the dashes to Latin-1 hyphens.)"""
    if not interval or interval.get("point") is None:
        return "—"
    text = f"{interval['point']:.{digits}f}"
    if interval.get("low") is not None and interval.get("high") is not None:
        text += f" ({interval['low']:.{digits}f}–{interval['high']:.{digits}f})"
    return text


# --- input checks -------------------------------------------------------------------------------


def _binary_arrays(labels: object, probabilities: object) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int 0/1 and probabilities as float in [0, 1], of equal length, or a clear error."""
    label_array = np.asarray(labels)
    probability_array = np.asarray(probabilities, dtype=float)
    if label_array.shape != probability_array.shape or label_array.ndim != 1:
        raise MetricsInputError(
            f"labels and probabilities must be 1-D and of equal length "
            f"(got {label_array.shape} and {probability_array.shape})."
        )
    if not np.isin(label_array, (0, 1)).all():
        raise MetricsInputError("labels must be 0 (normal) or 1 (abnormal).")
    if not (np.isfinite(probability_array).all() and ((probability_array >= 0) & (probability_array <= 1)).all()):
        raise MetricsInputError("probabilities must be finite numbers in [0, 1].")
    return label_array.astype(np.int64), probability_array


def _validated_images(images: pd.DataFrame) -> pd.DataFrame:
    """The images table with ``study_path`` present (derived from ``path`` when absent)."""
    missing = [column for column in _IMAGE_COLUMNS if column not in images.columns]
    if "study_path" not in images.columns and "path" not in images.columns:
        missing.append("path (or study_path)")
    if missing:
        raise MetricsInputError(f"The predictions table lacks column(s): {', '.join(missing)}.")
    _binary_arrays(images["label"], images["probability"])
    if "study_path" in images.columns:
        return images
    return images.assign(study_path=images["path"].str.rsplit("/", n=1).str[0] + "/")


def _both_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < int(labels.sum()) < labels.size


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


# --- study aggregation --------------------------------------------------------------------------


def _study_codes(images: pd.DataFrame, *, one_label: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Each image's study number and one row per study (sorted by study_path); vectorised because
    the dashboard rebuilds it whenever a threshold slider moves.

    ``one_label=False`` accepts groups whose images disagree (an image-level evaluation that only
    resamples by group, e.g. copies of one radiograph labelled differently); such a group's label
    is then 1 if any image is positive."""
    codes, study_paths = pd.factorize(images["study_path"], sort=True)
    n_studies = len(study_paths)
    labels = images["label"].to_numpy(dtype=np.int64)
    n_views = np.bincount(codes, minlength=n_studies)
    abnormal_views = np.bincount(codes, weights=labels, minlength=n_studies)
    mixed = (abnormal_views > 0) & (abnormal_views < n_views)
    if one_label and mixed.any():
        raise MetricsInputError(
            f"{int(mixed.sum())} studies have views with different labels "
            f"(first: {study_paths[np.flatnonzero(mixed)[0]]}); a study has one label."
        )
    probability_sums = np.bincount(codes, weights=images["probability"].to_numpy(dtype=float), minlength=n_studies)
    first_view = np.unique(codes, return_index=True)[1]
    firsts = images.iloc[first_view]
    studies = pd.DataFrame(
        {
            "study_path": np.asarray(study_paths, dtype=object),
            "study_type": firsts["study_type"].to_numpy(),
            "patient": firsts["patient"].to_numpy(),
            "study": firsts["study"].to_numpy(),
            "label": (abnormal_views > 0).astype(np.int64),
            "probability": probability_sums / np.maximum(n_views, 1),
            "n_views": n_views.astype(np.int64),
        },
        columns=_STUDY_COLUMNS,
    )
    return codes, studies


def study_table(images: pd.DataFrame) -> pd.DataFrame:
    """One row per study: study_path, study_type, patient, study, label, probability (mean of its
    views, as in the MURA paper) and n_views, sorted by study_path."""
    return _study_codes(_validated_images(images))[1]


# --- thresholds and operating points ------------------------------------------------------------


def row_thresholds(table: pd.DataFrame, thresholds: Thresholds) -> np.ndarray:
    """The threshold that applies to each row of an image or study table, by its study_type."""
    if not isinstance(thresholds, Mapping):
        return np.full(len(table), float(thresholds))
    default = thresholds.get(DEFAULT_THRESHOLD_KEY)
    study_types = table["study_type"]
    if default is None:
        missing = sorted(set(study_types.unique()) - set(thresholds))
        if missing:
            raise MetricsInputError(
                f"No threshold for {', '.join(missing)}; give one per study type or a {DEFAULT_THRESHOLD_KEY!r} entry."
            )
    per_row = study_types.map(dict(thresholds))
    if default is not None:
        per_row = per_row.fillna(default)
    return per_row.to_numpy(dtype=float)


def _counts(labels: np.ndarray, predicted: np.ndarray) -> tuple[int, int, int, int]:
    # A bincount of 2 * label + prediction is the 2x2 table in microseconds; sklearn's
    # confusion_matrix validates for about a millisecond, too slow inside bootstrap loops.
    tn, fp, fn, tp = np.bincount(2 * labels + predicted, minlength=4)
    return int(tn), int(fp), int(fn), int(tp)


def _kappa(labels: np.ndarray, predicted: np.ndarray, tn: int, tp: int) -> float | None:
    """sklearn's Cohen's kappa; ``None`` when chance agreement is total (everything one class on
    both sides), where kappa is 0/0."""
    if tn == labels.size or tp == labels.size:
        return None
    # With at least two classes between the two raters sklearn infers labels [0, 1] itself;
    # passing labels= would only slow it down.
    return _finite_or_none(cohen_kappa_score(labels, predicted))


def confusion_at(labels: object, probabilities: object, threshold: float | np.ndarray) -> Confusion:
    """Confusion counts, sensitivity, specificity, Cohen's kappa and accuracy with cases called
    abnormal when ``probability >= threshold`` (a float, or one threshold per row)."""
    labels, probabilities = _binary_arrays(labels, probabilities)
    predicted = (probabilities >= np.asarray(threshold, dtype=float)).astype(np.int64)
    tn, fp, fn, tp = _counts(labels, predicted)
    return Confusion(
        tn=tn,
        fp=fp,
        fn=fn,
        tp=tp,
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        kappa=_kappa(labels, predicted, tn, tp),
        accuracy=_ratio(tp + tn, labels.size),
    )


def confusion_by_type(table: pd.DataFrame, thresholds: Thresholds) -> dict[str, Confusion]:
    """Confusion per study type at its own threshold, plus ``"overall"`` (each row at its type's
    threshold). Works on an image table or a study table."""
    per_row = row_thresholds(table, thresholds)
    result = {OVERALL: confusion_at(table["label"], table["probability"], per_row)}
    for study_type in sorted(table["study_type"].unique()):
        rows = (table["study_type"] == study_type).to_numpy()
        result[study_type] = confusion_at(table["label"][rows], table["probability"][rows], per_row[rows])
    return result


# --- curves -------------------------------------------------------------------------------------


def _empty() -> np.ndarray:
    return np.empty(0, dtype=float)


def roc_curve_points(labels: object, probabilities: object, *, drop_intermediate: bool = True) -> RocCurve:
    """sklearn's ROC curve and AUROC; undefined (empty, ``auc=None``) without both classes."""
    labels, probabilities = _binary_arrays(labels, probabilities)
    if not _both_classes(labels):
        return RocCurve(_empty(), _empty(), _empty(), None)
    fpr, tpr, thresholds = roc_curve(labels, probabilities, drop_intermediate=drop_intermediate)
    return RocCurve(fpr, tpr, thresholds, float(area_under_curve(fpr, tpr)))


def pr_curve_points(labels: object, probabilities: object) -> PrCurve:
    """sklearn's precision-recall curve and average precision; undefined without both classes."""
    labels, probabilities = _binary_arrays(labels, probabilities)
    if not _both_classes(labels):
        return PrCurve(_empty(), _empty(), _empty(), None)
    precision, recall, thresholds = precision_recall_curve(labels, probabilities)
    return PrCurve(precision, recall, thresholds, float(average_precision_score(labels, probabilities)))


def _auroc(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """AUROC as sklearn's roc_auc_score computes it for two classes (auc of roc_curve), without its
    multiclass dispatch, which costs about twice as much again in every bootstrap resample."""
    if not _both_classes(labels):
        return None
    fpr, tpr, _ = roc_curve(labels, probabilities)
    return float(area_under_curve(fpr, tpr))


def auroc(labels: object, probabilities: object) -> float | None:
    """Area under the ROC curve, or None when only one class is present."""
    return _auroc(*_binary_arrays(labels, probabilities))


# --- bootstrap ----------------------------------------------------------------------------------


def _level_frame(images: pd.DataFrame, level: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The table a statistic sees at ``level``, each of its rows' study number, and study labels."""
    if level not in LEVELS:
        raise MetricsInputError(f"Unknown level {level!r}; use one of {', '.join(LEVELS)}.")
    codes, studies = _study_codes(images, one_label=level == "study")
    study_labels = studies["label"].to_numpy()
    if level == "study":
        return studies, np.arange(len(studies)), study_labels
    return images, codes, study_labels


def _resampled_rows(draws: np.ndarray, codes: np.ndarray) -> list[np.ndarray]:
    """Row positions of each resample: all rows of each drawn study, repeated as often as drawn."""
    rows_per_study = np.bincount(codes)
    row_order = np.argsort(codes, kind="stable")
    study_starts = np.cumsum(rows_per_study) - rows_per_study
    lengths = rows_per_study[draws]
    flat_lengths = lengths.ravel()
    flat_starts = np.repeat(study_starts[draws].ravel(), flat_lengths)
    within_study = np.arange(flat_lengths.sum()) - np.repeat(np.cumsum(flat_lengths) - flat_lengths, flat_lengths)
    return np.split(row_order[flat_starts + within_study], np.cumsum(lengths.sum(axis=1))[:-1])


def _bootstrap(
    codes: np.ndarray, study_labels: np.ndarray, measure: _Measure, n_boot: int, seed: int, confidence: float
) -> dict[str, BootstrapInterval]:
    """Percentile intervals of ``measure`` over resamples of studies; ``codes`` gives each row's study."""
    if n_boot < 1:
        raise MetricsInputError("n_boot must be at least 1.")
    points = {name: _finite_or_none(value) for name, value in measure(np.arange(codes.size)).items()}
    values: dict[str, list[float]] = {name: [] for name in points}
    n_studies = len(study_labels)
    if _both_classes(study_labels):
        # sklearn has no bootstrap over groups (sklearn.utils.resample draws rows, not studies),
        # hence this loop; every index is drawn up front from one seeded generator.
        draws = np.random.default_rng(seed).integers(0, n_studies, size=(n_boot, n_studies))
        abnormal_drawn = study_labels[draws].sum(axis=1)
        usable = (abnormal_drawn > 0) & (abnormal_drawn < n_studies)
        # The point estimate above ran with sklearn's full checks on the same kind of input;
        # skipping them per resample saves about a tenth of the time.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            for rows in _resampled_rows(draws[usable], codes):
                for name, value in measure(rows).items():
                    value = _finite_or_none(value)
                    if value is not None:
                        values[name].append(value)

    tail = (1.0 - confidence) / 2.0 * 100.0
    intervals = {}
    for name, collected in values.items():
        low = high = None
        if points[name] is not None and collected:
            low, high = (float(v) for v in np.percentile(collected, [tail, 100.0 - tail]))
        intervals[name] = BootstrapInterval(
            point=points[name],
            low=low,
            high=high,
            n_boot=n_boot,
            n_skipped=n_boot - len(collected),
            confidence=confidence,
        )
    return intervals


def bootstrap_cis(
    table: pd.DataFrame,
    statistics: Mapping[str, Statistic],
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: str = "study",
    confidence: float = CONFIDENCE,
) -> dict[str, BootstrapInterval]:
    """Percentile bootstrap intervals of several statistics over the same resamples of STUDIES.

    ``table`` is the images table. At ``level="study"`` each statistic sees a resampled study table
    (see :func:`study_table`); at ``level="image"`` it sees the images of the resampled studies, so
    the views of one study stay together. Resamples with a single class are skipped and counted.
    The same seed gives the same resamples, hence the same intervals.
    """
    frame, codes, study_labels = _level_frame(_validated_images(table), level)

    def measure(rows: np.ndarray) -> dict[str, float | None]:
        sample = frame.take(rows)
        return {name: statistic(sample) for name, statistic in statistics.items()}

    return _bootstrap(codes, study_labels, measure, n_boot, seed, confidence)


def bootstrap_ci(
    table: pd.DataFrame,
    statistic: Statistic,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: str = "study",
    confidence: float = CONFIDENCE,
) -> BootstrapInterval:
    """Percentile bootstrap interval of one statistic, resampling studies; see :func:`bootstrap_cis`.

    Example:
        >>> point, low, high = bootstrap_ci(images, lambda t: roc_auc_score(t.label, t.probability))
    """
    return bootstrap_cis(table, {"statistic": statistic}, n_boot=n_boot, seed=seed, level=level, confidence=confidence)[
        "statistic"
    ]


def bootstrap_means(
    values: np.ndarray,
    *,
    names: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    groups: Sequence[object] | np.ndarray | None = None,
) -> dict[str, BootstrapInterval]:
    """Means of the columns of ``values`` (one row per case) with percentile bootstrap intervals.

    Rows are drawn like :func:`bootstrap_cis` draws studies (one seeded generator, every index up
    front), so two tables with the same number of rows in the same order are resampled alike:
    their intervals are paired. No label is needed (every resample counts), so the means of all
    resamples are taken at once. NaNs are left out of each mean; a resample whose column is all
    NaN is skipped for that column. ``groups`` (one key per row, e.g. FracAtlas copy groups) draws
    whole groups instead of rows, so near-copies of one radiograph never count as independent
    cases; without it every row is its own group (the same draws as before groups existed).
    """
    if n_boot < 1:
        raise MetricsInputError("n_boot must be at least 1.")
    values = np.asarray(values, dtype=float).reshape(len(values), len(names))
    n_cases = len(values)
    if n_cases == 0:
        return {name: BootstrapInterval(None, None, None, n_boot, n_boot, confidence) for name in names}
    if groups is not None and len(groups) != n_cases:
        raise MetricsInputError(f"groups has {len(groups)} keys for {n_cases} rows.")
    codes = np.arange(n_cases) if groups is None else pd.factorize(np.asarray(groups, dtype=object))[0]
    frame = pd.DataFrame(values)
    # Per group: the sum of its values and how many are not NaN; a resample's mean is the ratio of their totals.
    sums, counts = (frame.groupby(codes).sum().to_numpy(), frame.groupby(codes).count().to_numpy())
    draws = np.random.default_rng(seed).integers(0, len(sums), size=(n_boot, len(sums)))
    with np.errstate(invalid="ignore", divide="ignore"):
        points = sums.sum(axis=0) / counts.sum(axis=0)
        means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    intervals = {}
    for column, name in enumerate(names):
        collected = means[:, column][np.isfinite(means[:, column])]
        point = _finite_or_none(float(points[column]))
        low = high = None
        if point is not None and collected.size:
            low, high = (float(v) for v in np.percentile(collected, [tail, 100.0 - tail]))
        intervals[name] = BootstrapInterval(
            point=point,
            low=low,
            high=high,
            n_boot=n_boot,
            n_skipped=n_boot - int(collected.size),
            confidence=confidence,
        )
    return intervals


# --- calibration --------------------------------------------------------------------------------


def calibration(labels: object, probabilities: object, n_bins: int = 10) -> tuple[pd.DataFrame, float | None]:
    """Reliability bins (uniform width; empty bins dropped) from sklearn's calibration_curve, and
    the expected calibration error: the count-weighted mean gap between the two, per bin."""
    labels, probabilities = _binary_arrays(labels, probabilities)
    columns = ["bin_low", "bin_high", "mean_predicted", "fraction_positive", "count"]
    if labels.size == 0:
        return pd.DataFrame(columns=columns), None
    fraction_positive, mean_predicted = calibration_curve(labels, probabilities, n_bins=n_bins, strategy="uniform")
    # calibration_curve returns no bin counts; recount with its own rule (uniform edges,
    # searchsorted over the inner edges, empty bins dropped) so the rows line up.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    all_counts = np.bincount(np.searchsorted(edges[1:-1], probabilities), minlength=n_bins)
    occupied = np.flatnonzero(all_counts)
    counts = all_counts[occupied]
    bins = pd.DataFrame(
        {
            "bin_low": edges[occupied],
            "bin_high": edges[occupied + 1],
            "mean_predicted": mean_predicted,
            "fraction_positive": fraction_positive,
            "count": counts,
        }
    )
    # sklearn has no expected calibration error; this is its definition (Naeini et al., 2015).
    ece = float(np.sum(counts / labels.size * np.abs(fraction_positive - mean_predicted)))
    return bins, ece


# --- summary for core.evaluate and the dashboard ------------------------------------------------


def _average_precision(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    return float(average_precision_score(labels, probabilities)) if _both_classes(labels) else None


def _operating_point_measure(labels: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray) -> _Measure:
    """AUROC, average precision, kappa, sensitivity and specificity of the rows at given positions; works on arrays
    with the per-row calls precomputed, because it runs a thousand times per group."""

    def measure(rows: np.ndarray) -> dict[str, float | None]:
        sample_labels, sample_predicted = labels[rows], predicted[rows]
        tn, fp, fn, tp = _counts(sample_labels, sample_predicted)
        return {
            "auroc": _auroc(sample_labels, probabilities[rows]),
            "average_precision": _average_precision(sample_labels, probabilities[rows]),
            "kappa": _kappa(sample_labels, sample_predicted, tn, tp),
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
        }

    return measure


def _group_summary(
    images: pd.DataFrame,
    level: str,
    thresholds: Thresholds,
    threshold: float | None,
    n_boot: int,
    seed: int,
    n_bins: int,
) -> dict[str, object]:
    frame, codes, study_labels = _level_frame(images, level)
    labels = frame["label"].to_numpy(dtype=np.int64)
    probabilities = frame["probability"].to_numpy(dtype=float)
    per_row = row_thresholds(frame, thresholds)
    confusion = confusion_at(labels, probabilities, per_row)
    predicted = (probabilities >= per_row).astype(np.int64)
    intervals = _bootstrap(
        codes, study_labels, _operating_point_measure(labels, probabilities, predicted), n_boot, seed, CONFIDENCE
    )
    return {
        "n": int(labels.size),
        "n_abnormal": int(labels.sum()),
        "n_studies": int(study_labels.size),
        "threshold": threshold,
        "auroc": intervals["auroc"].as_json(),
        "average_precision": pr_curve_points(labels, probabilities).average_precision,
        "average_precision_ci": intervals["average_precision"].as_json(),
        "kappa": intervals["kappa"].as_json(),
        "sensitivity": intervals["sensitivity"].as_json(),
        "specificity": intervals["specificity"].as_json(),
        "accuracy": confusion.accuracy,
        "confusion": {"tn": confusion.tn, "fp": confusion.fp, "fn": confusion.fn, "tp": confusion.tp},
        "ece": calibration(labels, probabilities, n_bins)[1],
    }


def summarise(
    images: pd.DataFrame,
    thresholds: Thresholds,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    n_bins: int = 10,
    levels: tuple[str, ...] = LEVELS,
) -> dict[str, Any]:
    """JSON-ready metrics: for each of ``levels`` ("image", "study") and group ("overall", then each
    study type): counts, AUROC, average precision, kappa, sensitivity and specificity with 95% bootstrap intervals
    (resampling studies), average precision, accuracy, confusion counts and ECE.

    Each group is judged at its type's threshold; "overall" judges each row at its own type's
    threshold, so its ``threshold`` is ``None`` unless one float was given. Undefined values
    (one class only, empty input) are ``None``, never NaN, so ``json.dumps(allow_nan=False)`` works.
    """
    images = _validated_images(images)
    study_types = sorted(images["study_type"].unique())
    types_present = pd.DataFrame({"study_type": study_types})
    per_type = dict(zip(study_types, row_thresholds(types_present, thresholds).tolist(), strict=True))
    overall_threshold = None if isinstance(thresholds, Mapping) else float(thresholds)
    groups = [(OVERALL, images, overall_threshold)] + [
        (study_type, images[images["study_type"] == study_type], per_type[study_type]) for study_type in study_types
    ]
    summary: dict[str, object] = {
        "confidence": CONFIDENCE,
        "n_boot": n_boot,
        "seed": seed,
        "calibration_bins": n_bins,
        "thresholds": per_type,
    }
    for level in levels:
        summary[level] = {
            name: _group_summary(group, level, thresholds, threshold, n_boot, seed, n_bins)
            for name, group, threshold in groups
        }
    return summary
