"""What Performance and Error analysis share: the cached evaluation of one model at one level,
and the operating-point controls (thresholds) that both pages read.

An evaluation is named by its dataset: MURA ``valid`` (core.evaluate's default) or ``fracatlas``
(external; its upper-limb images in one of core.eval.evaluation.FRACATLAS_STRATA, in core.eval.metrics' shape:
region as the group, fracture as the label, copies of one radiograph as one "study"). On FracAtlas the
``output`` scored is P(abnormal) on every image, or a fracture-aware model's P(fracture) on its test part only
(core.eval.evaluation.fracture_test_part, the rows metrics_fracatlas.json's ``fracture_output`` summarises).

Everything here works on the predictions core.evaluate cached: no model runs. What does not depend
on a threshold (tables, ROC/PR curves, calibration) is computed once per predictions file and level
(st.cache_data, keyed by the evaluation's file versions), and CIs that core.evaluate cached are read from
metrics_valid.json; what a threshold changes (confusion counts, kappa, sensitivity, specificity) is recomputed
per rerun, vectorised, by core.eval.metrics. Pages read the pair through state.evaluation_or_stop first, so
predictions and metrics from different runs never get here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data import fracture_split
from core.eval import metrics
from core.eval.evaluation import (
    FRACATLAS,
    fracatlas_stratum,
    fracture_test_part,
    fracture_thresholds,
    region_thresholds,
)
from core.eval.metrics import BootstrapInterval, Confusion, PrCurve, RocCurve
from core.model.card import (
    DEFAULT_THRESHOLD_KEY,
    MURA_LABEL,
    card_thresholds,
    model_outputs,
    threshold_for,
    trained_study_types,
)
from core.model.registry import FRACTURE
from core.store.artifacts import ModelArtifacts, file_version
from dashboard import charts, navigation, state
from dashboard.charts import CELLS, OVERALL, group_label

__all__ = [
    "MURA_VALID",
    "FRACATLAS",
    "DATASET_LABELS",
    "OUTPUT_LABELS",
    "LEVEL_LABELS",
    "GLOBAL",
    "PER_BODY_PART",
    "APP_BOOTSTRAP",
    "LevelEvaluation",
    "fracatlas_outputs",
    "fracatlas_images",
    "evaluation_table",
    "cached_metrics",
    "fracatlas_threshold_defaults",
    "level_evaluation",
    "ap_intervals",
    "reliability_chart",
    "threshold_controls",
    "chosen_thresholds",
    "user_thresholds",
    "level_control",
    "group_thresholds",
    "cached_operating_point",
    "bootstrap_at",
    "cell_studies",
]

MURA_VALID = "valid"
#: MURA's stratum of the body parts the model was trained on: the pool every page's headline uses (issue 27);
#: "all" keeps every evaluated body part (Error analysis lists the others apart).
TRAINED = "trained"
DATASET_LABELS = {MURA_VALID: "MURA valid/ (the test set)", FRACATLAS: "FracAtlas (external, fracture label)"}
#: What a FracAtlas evaluation scores against the fracture label, in plain words.
OUTPUT_LABELS = {
    FRACTURE: "The fracture output: P(fracture), on the test part it never trained on",
    MURA_LABEL: "The MURA output, zero-shot: P(abnormal), on every FracAtlas image",
}
LEVEL_LABELS = {"study": "Study (mean of its views, as in MURA)", "image": "Image (each view alone)"}
PER_BODY_PART = "per body part"
GLOBAL = "global"
_MODE_LABELS = {PER_BODY_PART: "Per body part (model card)", GLOBAL: "One threshold for all"}
_OTHER = DEFAULT_THRESHOLD_KEY
#: Resamples for the CIs computed in the app (the cached ones use core.evaluate's 1000).
APP_BOOTSTRAP = 200


@dataclass(frozen=True)
class LevelEvaluation:
    """The threshold-free part of an evaluation at one level ("image" or "study")."""

    level: str
    table: pd.DataFrame
    groups: list[str]
    roc: dict[str, RocCurve]
    pr: dict[str, PrCurve]
    calibration: dict[str, tuple[pd.DataFrame, float | None]]


def _group_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """ "overall" and one table per study type present (sorted), as core.eval.metrics groups them."""
    groups = {OVERALL: table}
    for study_type in sorted(table["study_type"].unique()):
        groups[study_type] = table[table["study_type"] == study_type]
    return groups


def _predictions_version(model: str, dataset: str = MURA_VALID, output: str = MURA_LABEL) -> tuple[str | int, ...]:
    """The cached evaluation's file versions (and, for the fracture output, its split file's): the cache key
    below. Hashing the table itself would cost more per rerun than everything a threshold change recomputes."""
    files = ModelArtifacts.of(model)
    version = files.evaluation_version(dataset)
    if output == FRACTURE:
        return (*version, file_version(files.directory / fracture_split.SPLIT_FILE))
    return version


def fracatlas_outputs(model: str) -> list[str]:
    """The outputs Performance can score on FracAtlas, the default first: a fracture-aware model's fracture
    output when core.evaluate summarised it on the test part and the split file is there, then P(abnormal).

    Raises:
        EvaluationMismatchError: the cached FracAtlas files come from different runs.
        core.data.fracture_split.SplitError: the split file is damaged.
    """
    if FRACTURE not in model_outputs(state.read_card(model) or {}):
        return [MURA_LABEL]
    summarised = "fracture_output" in (state.read_metrics(model, FRACATLAS) or {})
    return [FRACTURE, MURA_LABEL] if summarised and state.read_fracture_split(model) is not None else [MURA_LABEL]


def fracatlas_images(model: str, output: str = MURA_LABEL) -> pd.DataFrame | None:
    """Every cached FracAtlas row ``output``'s figures come from (leg/hip included), ``probability`` being
    that output's: P(abnormal) of every image, or P(fracture) of the test part's; None without them."""
    predictions = state.read_predictions(model, FRACATLAS)
    if predictions is None or output != FRACTURE:
        return predictions
    split = state.read_fracture_split(model)
    return None if split is None else fracture_test_part(predictions, split)


def evaluation_table(
    model: str, dataset: str = MURA_VALID, stratum: str = "all", output: str = MURA_LABEL
) -> pd.DataFrame | None:
    """The cached per-image predictions of ``dataset`` in core.eval.metrics' shape (FracAtlas: the upper-limb
    images of ``stratum`` that ``output``'s figures come from), or None when the evaluation has not been run."""
    if dataset == FRACATLAS:
        images = fracatlas_images(model, output)
        return None if images is None else fracatlas_stratum(images, stratum)
    predictions = state.read_predictions(model, dataset)
    if predictions is None:
        return None
    trained = trained_study_types(state.read_card(model) or {}) if stratum == TRAINED else []
    return predictions[predictions["study_type"].isin(trained)] if trained else predictions


def cached_metrics(
    model: str, dataset: str = MURA_VALID, stratum: str = "all", output: str = MURA_LABEL
) -> dict | None:
    """The cached metrics in metrics_valid.json's shape (levels -> groups); for FracAtlas the image
    level of ``stratum`` with the file's thresholds and resample count (for the fracture output, those of
    its test-part summary, ``fracture_output``)."""
    cached = state.read_metrics(model, dataset)
    if cached is None:
        return None
    if dataset == FRACATLAS and output == FRACTURE:
        summary = cached.get("fracture_output") or {}
        threshold = summary.get("threshold")
        return {
            "image": summary.get(stratum) or {},
            "thresholds": {} if threshold is None else fracture_thresholds(float(threshold)),
            "n_boot": summary.get("n_boot"),
        }
    if dataset != FRACATLAS:
        return (
            trained_pool_metrics(cached, trained_study_types(state.read_card(model) or {}))
            if stratum == TRAINED
            else cached
        )
    return {
        "image": cached.get(stratum) or {},
        "thresholds": cached.get("thresholds", {}),
        "n_boot": cached.get("n_boot"),
    }


def trained_pool_metrics(cached: Mapping, trained: list[str]) -> dict:
    """metrics_valid.json narrowed to the trained body parts: their groups, and their pool (the file's
    ``"trained"`` entry) as "overall"; with no pool cached, "overall" stays only if it holds no other part."""
    if not trained:
        return dict(cached)
    pool = cached.get("trained") or {}
    narrowed = dict(cached)
    for level in metrics.LEVELS:
        groups = cached.get(level)
        if not isinstance(groups, Mapping):
            continue
        kept = {group: summary for group, summary in groups.items() if group in trained}
        if pool.get(level):
            kept = {OVERALL: pool[level]} | kept
        elif OVERALL in groups and set(groups) - {OVERALL} <= set(trained):
            kept = {OVERALL: groups[OVERALL]} | kept
        narrowed[level] = kept
    return narrowed


def fracatlas_threshold_defaults(card: Mapping | None, output: str = MURA_LABEL) -> dict[str, float]:
    """The card's threshold for each FracAtlas region (core.eval.evaluation.REGION_THRESHOLDS), plus "default";
    for the fracture output its one ``fracture_threshold`` for every region."""
    if output == FRACTURE:
        return fracture_thresholds(float((card or {})["fracture_threshold"]))
    return region_thresholds(dict(card or {})) | {_OTHER: card_thresholds(card)[_OTHER]}


@st.cache_data(show_spinner="Preparing the cached evaluation…", max_entries=8)
def _level_evaluation(
    model: str,
    level: str,
    version: tuple[str | int, ...],
    dataset: str = MURA_VALID,
    stratum: str = "all",
    output: str = MURA_LABEL,
) -> LevelEvaluation | None:
    predictions = evaluation_table(model, dataset, stratum, output)
    if predictions is None or predictions.empty:
        return None
    table = metrics.study_table(predictions) if level == "study" else predictions
    roc, pr, bins = {}, {}, {}
    for group, rows in _group_tables(table).items():
        labels, probabilities = rows["label"].to_numpy(), rows["probability"].to_numpy()
        roc[group] = metrics.roc_curve_points(labels, probabilities)
        pr[group] = metrics.pr_curve_points(labels, probabilities)
        bins[group] = metrics.calibration(labels, probabilities)
    return LevelEvaluation(level, table.reset_index(drop=True), list(roc), roc, pr, bins)


def level_evaluation(
    model: str, level: str, dataset: str = MURA_VALID, stratum: str = "all", output: str = MURA_LABEL
) -> LevelEvaluation | None:
    """The cached evaluation of ``model`` at ``level``, or None without cached predictions."""
    return _level_evaluation(model, level, _predictions_version(model, dataset, output), dataset, stratum, output)


def ap_intervals(
    model: str,
    level: str,
    groups: list[str],
    dataset: str = MURA_VALID,
    stratum: str = "all",
    output: str = MURA_LABEL,
) -> dict[str, dict[str, float | int | None]]:
    """95% CIs of average precision per group, as core.evaluate cached them in metrics_<dataset>.json
    (threshold-free, so computed once offline). Groups the file lacks get no interval."""
    cached = (cached_metrics(model, dataset, stratum, output) or {}).get(level, {})
    return {
        group: cached[group]["average_precision_ci"]
        for group in groups
        if "average_precision_ci" in cached.get(group, {})
    }


# cache_resource hands out the same Figure without copying it: st.plotly_chart only reads it, and
# building this one costs more than everything a threshold change recomputes.
@st.cache_resource(show_spinner=False, max_entries=8)
def _reliability_chart(
    model: str,
    level: str,
    groups: tuple[str, ...],
    version: tuple[str | int, ...],
    dataset: str = MURA_VALID,
    stratum: str = "all",
    output: str = MURA_LABEL,
) -> go.Figure:
    evaluated = _level_evaluation(model, level, version, dataset, stratum, output)
    return charts.reliability_figure(
        {group: evaluated.calibration[group] for group in groups},
        title=f"Reliability diagram ({level} level, 10 equal-width bins)",
        pool=charts.UPPER_LIMB_POOL if dataset == FRACATLAS else charts.TRAINED_POOL,
    )


def reliability_chart(
    model: str,
    level: str,
    groups: list[str],
    dataset: str = MURA_VALID,
    stratum: str = "all",
    output: str = MURA_LABEL,
) -> go.Figure:
    """The (threshold-free) reliability diagram of ``groups``, built once per predictions file."""
    return _reliability_chart(
        model, level, tuple(groups), _predictions_version(model, dataset, output), dataset, stratum, output
    )


def _kept_key(key: str) -> str:
    """Where a control's value is kept: shared by pages, while each page has its own widget keys."""
    return f"kept:{key}"


def _threshold_key(model: str, group: str) -> str:
    return f"threshold:{model}:{group}"


def _reset(model: str, defaults: Mapping[str, float]) -> None:
    """Back to the card: its thresholds, and per body part (a global mode left on would hide them)."""
    st.session_state[_kept_key(f"threshold_mode:{model}")] = PER_BODY_PART
    values = dict(defaults) | {GLOBAL: defaults[_OTHER]}
    for group, value in values.items():
        st.session_state[_kept_key(_threshold_key(model, group))] = value


def threshold_controls(
    model: str, card: Mapping | None, *, scope: str, defaults: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Mode (per body part or one global) and threshold sliders, kept across pages; returns the
    thresholds as core.eval.metrics takes them: study type -> threshold, plus "default".

    ``scope`` names the calling page: widget keys are ``<scope>:threshold_mode:<model>`` and
    ``<scope>:threshold:<model>:<XR_TYPE | default | global>``. ``defaults`` replaces the card's
    thresholds (FracAtlas: one per region, :func:`fracatlas_threshold_defaults`); then every group
    is named and no slider for "other body parts" is drawn.
    """
    named_only = defaults is not None
    defaults = dict(defaults) if named_only else card_thresholds(card)
    mode_key = f"threshold_mode:{model}"
    mode = st.radio(
        "Operating threshold",
        list(_MODE_LABELS),
        format_func=_MODE_LABELS.get,
        horizontal=True,
        **navigation.kept_widget(f"{scope}:{mode_key}", _kept_key(mode_key), PER_BODY_PART),
        help="A study (or image) is called abnormal when its probability ≥ the threshold. "
        "The model card's thresholds maximise study-level kappa on train's holdout patients.",
    )
    if mode == GLOBAL:
        sliders = [(GLOBAL, "Threshold for every body part", defaults[_OTHER])]
    else:  # named body parts first, then the slider for every other body part
        named = sorted(group for group in defaults if group != _OTHER)
        sliders = [(group, group_label(group), defaults[group]) for group in named]
        if not named_only:
            sliders.append((_OTHER, "Other body parts", defaults[_OTHER]))
    thresholds = {_OTHER: defaults[_OTHER]}
    for column, (group, label, default) in zip(st.columns(len(sliders)), sliders, strict=True):
        key = _threshold_key(model, group)
        value = float(
            column.slider(
                label,
                0.0,
                1.0,
                step=0.01,
                format="%.3f",
                **navigation.kept_widget(f"{scope}:{key}", _kept_key(key), default),
            )
        )
        thresholds[_OTHER if group == GLOBAL else group] = value
    st.button(
        "Reset to the model card's thresholds", on_click=_reset, args=(model, defaults), key=f"{scope}:threshold_reset"
    )
    return thresholds


def chosen_thresholds(model: str, card: Mapping | None, kept: Mapping[str, object] | None = None) -> dict[str, float]:
    """The MURA thresholds last set with :func:`threshold_controls` on any page, for every body part
    the card names plus "default"; the card's own where none was moved (what the report is drawn at).

    ``kept`` is where the controls keep their values: st.session_state unless given (tests).
    """
    kept = st.session_state if kept is None else kept
    defaults = card_thresholds(card)
    if kept.get(_kept_key(f"threshold_mode:{model}"), PER_BODY_PART) == GLOBAL:
        value = float(kept.get(_kept_key(_threshold_key(model, GLOBAL)), defaults[_OTHER]))
        return dict.fromkeys(defaults, value)
    return {
        group: float(kept.get(_kept_key(_threshold_key(model, group)), default)) for group, default in defaults.items()
    }


def user_thresholds(model: str, card: Mapping | None) -> dict[str, float] | None:
    """:func:`chosen_thresholds` when the user moved them away from the card's, else None: Explain judges
    its verdict at these and says so, so a page never contradicts another."""
    chosen, defaults = chosen_thresholds(model, card), card_thresholds(card)
    if all(np.isclose(chosen[group], value) for group, value in defaults.items()):
        return None
    return chosen


def level_control(key: str = "evaluation_level") -> str:
    """Study- or image-level evaluation (kept when the user visits other pages and comes back)."""
    return st.radio(
        "Level",
        list(LEVEL_LABELS),
        format_func=LEVEL_LABELS.get,
        horizontal=True,
        **navigation.kept_widget(key, _kept_key(key), "study"),
    )


def group_thresholds(table: pd.DataFrame, thresholds: Mapping[str, float]) -> dict[str, float | None]:
    """The threshold each group is judged at; None for "overall" when its rows use different ones."""
    per_row = metrics.row_thresholds(table, thresholds)
    result: dict[str, float | None] = {
        OVERALL: float(per_row[0]) if per_row.size and np.all(per_row == per_row[0]) else None
    }
    for study_type in sorted(table["study_type"].unique()):
        result[study_type] = threshold_for(thresholds, study_type)
    return result


def cached_operating_point(
    cached: Mapping | None, thresholds: Mapping[str, float], groups: list[str]
) -> dict[str, bool]:
    """Per group: are the current thresholds exactly those of the cached evaluation (so its CIs
    apply)? "overall" matches only when every study type does."""
    cached_thresholds = (cached or {}).get("thresholds") or {}
    matches = {}
    for group in groups:
        if group == OVERALL:
            continue
        current = threshold_for(thresholds, group)
        matches[group] = group in cached_thresholds and bool(np.isclose(current, cached_thresholds[group]))
    matches[OVERALL] = bool(matches) and all(matches.values())
    return matches


def _statistics(thresholds: Mapping[str, float] | float) -> dict[str, metrics.Statistic]:
    """Kappa, sensitivity and specificity of a resampled table at ``thresholds`` (one float, or
    per study type)."""
    latest: dict[str, object] = {}

    def at(table: pd.DataFrame) -> Confusion:
        # bootstrap_cis evaluates every statistic on one resample before drawing the next, so the
        # latest resample's confusion serves all three (sklearn's kappa dominates the cost).
        if latest.get("table") is not table:
            per_row = thresholds if isinstance(thresholds, float) else metrics.row_thresholds(table, thresholds)
            latest["table"] = table
            latest["confusion"] = metrics.confusion_at(
                table["label"].to_numpy(), table["probability"].to_numpy(), per_row
            )
        return latest["confusion"]

    return {
        "kappa": lambda table: at(table).kappa,
        "sensitivity": lambda table: at(table).sensitivity,
        "specificity": lambda table: at(table).specificity,
    }


@st.cache_data(show_spinner="Bootstrapping confidence intervals…", max_entries=64)
def _bootstrap_at(
    model: str,
    level: str,
    thresholds: tuple[tuple[str, float], ...],
    groups: tuple[str, ...],
    version: tuple[str | int, ...],
    dataset: str = MURA_VALID,
    stratum: str = "all",
    output: str = MURA_LABEL,
) -> dict[str, dict[str, BootstrapInterval]]:
    predictions = evaluation_table(model, dataset, stratum, output)
    by_type = dict(thresholds)
    result = {}
    for group in groups:
        if group == OVERALL:
            images, judged_at = predictions, by_type
        else:  # one body part: one threshold, no per-row lookup in every resample
            images = predictions[predictions["study_type"] == group]
            judged_at = threshold_for(by_type, group)
        result[group] = metrics.bootstrap_cis(images, _statistics(judged_at), n_boot=APP_BOOTSTRAP, level=level)
    return result


def bootstrap_at(
    model: str,
    level: str,
    thresholds: Mapping[str, float],
    groups: list[str],
    dataset: str = MURA_VALID,
    stratum: str = "all",
    output: str = MURA_LABEL,
) -> dict[str, dict[str, BootstrapInterval]]:
    """95% bootstrap CIs (resampling studies, APP_BOOTSTRAP times) of kappa, sensitivity and
    specificity at ``thresholds``, per group; cached per threshold setting."""
    return _bootstrap_at(
        model,
        level,
        tuple(sorted(thresholds.items())),
        tuple(groups),
        _predictions_version(model, dataset, output),
        dataset,
        stratum,
        output,
    )


def cell_studies(table: pd.DataFrame, thresholds: Mapping[str, float], cell: str) -> pd.DataFrame:
    """The rows of ``table`` in one confusion cell, most confident call first (for FP and FN:
    most confidently wrong first). Confidence is P(abnormal) for an abnormal call, else 1 − it."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}")
    per_row = metrics.row_thresholds(table, thresholds)
    probability = table["probability"].to_numpy(dtype=float)
    called_abnormal = probability >= per_row
    actually_abnormal = table["label"].to_numpy() == 1
    wanted_abnormal_call = cell in ("FP", "TP")
    wanted_abnormal_truth = cell in ("FN", "TP")
    rows = (called_abnormal == wanted_abnormal_call) & (actually_abnormal == wanted_abnormal_truth)
    confidence = np.where(called_abnormal, probability, 1.0 - probability)
    selected = table.assign(threshold=per_row, confidence=confidence)[rows]
    return selected.sort_values(["confidence", "study_path"], ascending=[False, True], kind="stable")
