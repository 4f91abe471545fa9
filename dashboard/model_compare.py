"""Performance's "Compare with another model": two models' cached predictions of MURA valid/ side by
side, on the studies both evaluated.

It shows both ROC curves, core.compare's paired bootstrap of the AUROC difference per body part (the
numbers ``python -m core.compare`` prints), and the studies where the two models' verdicts differ,
each openable in Explain. Everything comes from what core.evaluate cached; no model runs. The
comparison is computed once per pair of predictions files (st.cache_data keyed by both models'
file versions), and a pair of files from two runs, a missing evaluation or two tables that
disagree on a label are one sentence, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.eval import comparison as compare
from core.eval import metrics
from core.eval.metrics import MetricsInputError, RocCurve
from core.model.card import ModelCardError, card_thresholds, trained_study_types
from core.store.artifacts import EvaluationMismatchError, ModelArtifacts
from dashboard import navigation, state, studies, views
from dashboard.charts import OVERALL, TOO_FEW, group_label, too_few
from dashboard.markup import escape_markdown

__all__ = [
    "OTHER_MODEL_KEY",
    "OPEN_STUDY_KEY",
    "Comparison",
    "comparison",
    "difference_table",
    "disagreements",
    "roc_comparison_figure",
    "compare_section",
]

#: Widget keys: the second model (kept when the user visits Explain and comes back) and the study to open.
OTHER_MODEL_KEY = "performance:compare_with"
OPEN_STUDY_KEY = "performance:compare_open"
_OTHER_MODEL_KEPT = "kept:compare_with"
_DATASET = "valid"  # core.compare pairs MURA studies; FracAtlas has no studies to open in Explain
_COLOURS = ("#4FC3F7", "#FFB74D")  # the theme's primary colour for the page's model, orange for the other


@dataclass(frozen=True)
class Comparison:
    """Two models on the studies both evaluated: the paired study table, core.compare's report and ROC curves."""

    paired: pd.DataFrame
    report: dict[str, dict]
    roc: dict[str, tuple[RocCurve, RocCurve]]


@st.cache_data(show_spinner="Comparing the two models' cached predictions…", max_entries=8)
def _comparison(
    model_a: str, model_b: str, versions: tuple[tuple[str, int, int], tuple[str, int, int]]
) -> Comparison | None:
    tables = [state.read_predictions(model, _DATASET) for model in (model_a, model_b)]
    if any(table is None for table in tables):
        return None
    # One rule (issue 27): only the body parts the page's model was trained on are compared, and "overall"
    # is their pool, the figure Overview and the report give.
    trained = trained_study_types(state.read_card(model_a) or {})
    studies_a, studies_b = (metrics.study_table(table) for table in tables)
    if trained:
        studies_a, studies_b = (t[t["study_type"].isin(trained)] for t in (studies_a, studies_b))
    paired = compare.paired_studies(studies_a, studies_b)
    groups = {OVERALL: paired} | dict(iter(paired.groupby("study_type")))
    roc = {
        group: (
            metrics.roc_curve_points(rows["label"], rows["probability"]),
            metrics.roc_curve_points(rows["label"], rows["probability_b"]),
        )
        for group, rows in groups.items()
    }
    return Comparison(paired, compare.compare_tables(studies_a, studies_b), roc)


def comparison(model_a: str, model_b: str) -> Comparison | None:
    """The cached comparison of two models on MURA valid/, or None when either has no cached evaluation.

    Raises:
        EvaluationMismatchError: a model's predictions and metrics come from different runs.
        MetricsInputError: the two tables disagree on a study's label, or share no study.
    """
    for model in (model_a, model_b):
        state.cached_evaluation(model, _DATASET)  # refuses a predictions/metrics pair from two runs
    versions = tuple(ModelArtifacts.of(model).evaluation_version(_DATASET) for model in (model_a, model_b))
    return _comparison(model_a, model_b, versions)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def difference_table(report: dict[str, dict], model_a: str, model_b: str) -> pd.DataFrame:
    """core.compare's report as the page shows it: one row per body part, the pool first, as text.

    The rule of every table (dashboard.charts.too_few): a group with too few studies, or too few of
    either class, shows TOO_FEW instead of an AUROC, a difference or an interval ("0.000 (0.000-0.000)"
    from four studies says nothing).
    """
    groups = [OVERALL] + sorted(group for group in report if group != OVERALL)
    rows = []
    for group in groups:
        entry, difference = report[group], report[group]["difference"]
        low, high = difference["low"], difference["high"]
        few = too_few(entry["studies"], entry.get("abnormal"))
        rows.append(
            {
                "Body part": group_label(group),
                "Studies": entry["studies"],
                f"AUROC {model_a}": TOO_FEW if few else _number(entry["auroc_a"]),
                f"AUROC {model_b}": TOO_FEW if few else _number(entry["auroc_b"]),
                "Difference (A − B)": TOO_FEW if few else _number(difference["point"]),
                "95% CI": TOO_FEW if few else ("—" if low is None or high is None else f"{low:.3f} to {high:.3f}"),
                "CI excludes 0": "—"
                if few or low is None or high is None
                else ("yes" if low > 0 or high < 0 else "no"),
            }
        )
    return pd.DataFrame(rows)


def disagreements(
    paired: pd.DataFrame, thresholds_a: dict[str, float], thresholds_b: dict[str, float], model_a: str, model_b: str
) -> pd.DataFrame:
    """The studies whose verdicts differ, each model at its own thresholds, the widest gap in
    probability first; ``study_path`` is what Explain opens."""
    abnormal_a = paired["probability"].to_numpy() >= metrics.row_thresholds(paired, thresholds_a)
    abnormal_b = paired["probability_b"].to_numpy() >= metrics.row_thresholds(paired, thresholds_b)
    rows = paired[abnormal_a != abnormal_b]
    label = rows["label"].astype(bool)
    says_a = abnormal_a[abnormal_a != abnormal_b]
    table = pd.DataFrame(
        {
            "study_path": rows["study_path"],
            "Body part": rows["study_type"].map(group_label),
            "Label": np.where(label, "Abnormal", "Normal"),
            f"P {model_a}": rows["probability"],
            f"P {model_b}": rows["probability_b"],
            "Right": np.where(says_a == label, model_a, model_b),
            "gap": (rows["probability"] - rows["probability_b"]).abs(),
        }
    )
    return table.sort_values(["gap", "study_path"], ascending=[False, True]).drop(columns="gap").reset_index(drop=True)


def roc_comparison_figure(curves: tuple[RocCurve, RocCurve], models: tuple[str, str], title: str) -> go.Figure:
    """Both models' ROC curves on the same studies, AUROC in the legend."""
    traces = [
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line={"dash": "dot", "color": "#bbbbbb"},
            hoverinfo="skip",
            showlegend=False,
        )
    ]
    for curve, model, colour in zip(curves, models, _COLOURS, strict=True):
        if curve.auc is None:
            continue
        traces.append(
            go.Scatter(
                x=curve.fpr,
                y=curve.tpr,
                mode="lines",
                name=f"{model} · AUC {curve.auc:.3f}",
                line={"color": colour, "width": 2},
                customdata=curve.thresholds,
                hovertemplate="threshold %{customdata:.3f}<br>FPR %{x:.3f} · TPR %{y:.3f}<extra></extra>",
            )
        )
    return go.Figure(
        data=traces,
        layout={
            "title": {"text": title},
            "height": 430,
            "margin": {"l": 10, "r": 10, "t": 50, "b": 10},
            "legend": {"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
            "xaxis": {
                "title": {"text": "1 − specificity (false-positive rate)"},
                "range": [-0.01, 1.01],
                "constrain": "domain",
            },
            "yaxis": {"title": {"text": "Sensitivity"}, "range": [-0.01, 1.01], "scaleanchor": "x", "scaleratio": 1},
        },
    )


def _other_model(model: str) -> str | None:
    """The second model the user picked (kept across pages), or None; a note when there is none to pick."""
    others = [name for name in state.available_models() if name != model]
    if not others:
        st.caption(
            "Only one model is installed (a folder under weights/ with a checkpoint and a model card), "
            "so there is no second model to compare it with."
        )
        return None
    if st.session_state.get(_OTHER_MODEL_KEPT) not in others:
        st.session_state[_OTHER_MODEL_KEPT] = None
    return st.selectbox(
        "Second model",
        others,
        index=None,
        placeholder="Choose a model to compare with",
        **navigation.kept_widget(OTHER_MODEL_KEY, _OTHER_MODEL_KEPT, None),
        help="Both models' cached predictions of MURA valid/, compared on the studies both evaluated.",
    )


def _card(model: str) -> dict | None:
    """The model's card ({} without one), or None (with one sentence) when it is damaged."""
    try:
        return state.read_card(model) or {}
    except ModelCardError as exc:
        st.error(str(exc))
        return None


def _show_disagreements(table: pd.DataFrame, model_a: str, model_b: str, total: int) -> None:
    """The disagreement list and the control that opens one of its studies in Explain."""
    st.markdown(
        f"**Studies where the two models disagree** ({len(table)} of {total}; each model at its own "
        "model card's thresholds, the widest gap in probability first)"
    )
    if table.empty:
        st.caption("The two models call every shared study the same way.")
        return
    probability = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(
        table.rename(columns={"study_path": "Study"}),
        hide_index=True,
        width="stretch",
        column_config={f"P {model_a}": probability, f"P {model_b}": probability},
    )
    chosen = st.selectbox(
        "Study to open", table["study_path"].tolist(), key=OPEN_STUDY_KEY, format_func=studies.study_title
    )
    no_root = state.current_mura_root() is None
    if st.button("Open in Explain", key="performance_compare_open", icon=":material/visibility:", disabled=no_root):
        views.open_in_explain(chosen)
    if no_root:
        st.caption(
            "Set your MURA folder in the sidebar to open these studies in Explain (the app ships no MURA images)."
        )


def compare_section(model: str, dataset: str) -> None:
    """The "Compare with another model" section of Performance, for the page's ``model``."""
    st.subheader("Compare with another model")
    if dataset != _DATASET:
        st.caption("Models are compared on the studies of MURA valid/: choose that dataset at the top of the page.")
        return
    other = _other_model(model)
    if other is None:
        return
    names = escape_markdown(model), escape_markdown(other)
    try:
        compared = comparison(model, other)
    except (EvaluationMismatchError, MetricsInputError) as exc:
        st.error(f"{names[0]} and {names[1]} cannot be compared: {escape_markdown(str(exc))}")
        return
    if compared is None:
        st.info(
            f"{names[0]} or {names[1]} has no cached evaluation of MURA valid/ yet. Run `python -m core.evaluate "
            "--mura-root PATH --split valid --model NAME` for it and reload."
        )
        return
    card_a, card_b = _card(model), _card(other)
    if card_a is None or card_b is None:
        return
    paired, models = compared.paired, (model, other)
    st.caption(
        f"A = {names[0]} (the page's model), B = {names[1]}: {len(paired)} studies both evaluated, study level "
        "(mean of each study's views), from the cached predictions (no model runs here)."
    )
    # Curves for all body parts and those the page's model was trained on, as in the page's own charts.
    trained = set(trained_study_types(card_a)) or set(compared.roc)
    groups = [
        group
        for group, curves in compared.roc.items()
        if (group == OVERALL or group in trained) and all(curve.auc is not None for curve in curves)
    ]
    if groups:
        group = st.radio("Body part", groups, format_func=group_label, horizontal=True, key="performance_compare_group")
        st.plotly_chart(
            roc_comparison_figure(compared.roc[group], models, f"ROC, {group_label(group).lower()} (study level)"),
            key="performance_compare_roc",
        )
    else:
        st.caption("No ROC curve: the shared studies lack normal or abnormal ones.")
    table = difference_table(compared.report, model, other)
    st.markdown(
        f"**AUROC difference per body part** (A − B, with a paired bootstrap 95% CI: "
        f"{metrics.DEFAULT_N_BOOT} resamples of the studies both evaluated, as `python -m core.compare` "
        "computes it; a CI that excludes 0 is a difference the resampling does not explain away)"
    )
    st.dataframe(table, hide_index=True, width="stretch")
    table = disagreements(paired, card_thresholds(card_a), card_thresholds(card_b), model, other)
    _show_disagreements(table, model, other, len(paired))
