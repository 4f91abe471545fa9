"""Performance: ROC and PR per body part, confusion matrices at a threshold you move, kappa with
CIs, image- or study-level, calibration. Everything comes from the cached evaluation; no model runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import metrics
from core.card import trained_study_types
from dashboard import charts, evaluation, state
from dashboard.charts import OVERALL, format_interval, group_label

model = state.checked_model_name()
st.title("Performance")
card = state.read_card(model)
cached_evaluation = state.evaluation_or_stop(model)
cached = cached_evaluation.metrics if cached_evaluation else None

level = evaluation.level_control()
evaluated = evaluation.level_evaluation(model, level)
if evaluated is None:
    st.info(f"No cached evaluation for **{model}** yet. Run `make evaluate` "
            "(python -m core.evaluate --mura-root PATH --split valid) and reload.")
    st.stop()

split = (cached or {}).get("evaluation", {}).get("split", "valid")
table = evaluated.table
# Charts show the pool and the body parts the model was trained on; the few studies of other body
# parts in MURA valid/ would draw curves from a handful of points, so they stay in the tables.
trained = set(trained_study_types(card or {})) or set(evaluated.groups)
others = sorted(set(evaluated.groups) - trained - {OVERALL})
st.caption(
    f"{model} on MURA {split}/: {len(table)} {'studies' if level == 'study' else 'images'}, "
    f"{table['study_type'].nunique()} body part(s), "
    "from the cached predictions (no model runs on this page)."
    + (f" Not trained on {', '.join(group_label(g) for g in others)}: those appear in the tables and in "
       "'All body parts', not in the charts." if others else "")
)
thresholds = evaluation.threshold_controls(model, card, scope="performance")

# --- what the thresholds change: recomputed on every rerun from the cached probabilities -----
confusions = metrics.confusion_by_type(table, thresholds)
groups = list(confusions)
per_group_threshold = evaluation.group_thresholds(table, thresholds)
plotted = [g for g in groups if (g == OVERALL or g in trained) and evaluated.roc[g].auc is not None]

st.subheader("Confusion matrices at your thresholds")
for column, group in zip(st.columns(len(plotted) or 1), plotted):
    threshold = per_group_threshold[group]
    title = group_label(group) + ("" if threshold is None else f" · ≥ {threshold:.2f}")
    column.plotly_chart(charts.confusion_figure(confusions[group], title=title, height=280),
                        key=f"performance_confusion_{group}", config={"displayModeBar": False})

show_bootstrap = st.toggle(
    f"Bootstrap 95% CIs at your thresholds ({evaluation.APP_BOOTSTRAP} resamples of studies)",
    key="performance_bootstrap",
    help="For all body parts and those the model was trained on; cached per threshold setting. "
         "The first computation takes a few seconds.",
)
intervals = evaluation.bootstrap_at(model, level, thresholds, plotted) if show_bootstrap else {}


def _threshold_text(threshold: float | None) -> str:
    return "each at its own" if threshold is None else f"{threshold:.2f}"


def _rate(group: str, name: str, point: float | None) -> float | str | None:
    """The live value; with bootstrap CIs on, the whole column is text ("point (low–high)")."""
    if not intervals:
        return point
    if group in intervals:
        return format_interval(intervals[group][name].as_json())
    return format_interval({"point": point})


live = pd.DataFrame(
    [
        {
            "Body part": group_label(group),
            "Threshold": _threshold_text(per_group_threshold[group]),
            "Studies" if level == "study" else "Images": c.n,
            "TP": c.tp, "FP": c.fp, "FN": c.fn, "TN": c.tn,
            "Sensitivity": _rate(group, "sensitivity", c.sensitivity),
            "Specificity": _rate(group, "specificity", c.specificity),
            "Kappa": _rate(group, "kappa", c.kappa),
            "Accuracy": c.accuracy,
        }
        for group, c in confusions.items()
    ]
)
st.markdown(f"**At your thresholds** ({level} level; point values computed now from the cached probabilities"
            + (f", with {evaluation.APP_BOOTSTRAP}-resample bootstrap 95% CIs)" if intervals else ")"))
rates = ["Accuracy"] if intervals else ["Sensitivity", "Specificity", "Kappa", "Accuracy"]
st.dataframe(live, hide_index=True, width="stretch",
             column_config={name: st.column_config.NumberColumn(format="%.3f") for name in rates})

matches = evaluation.cached_operating_point(cached, thresholds, groups)
cached_level = (cached or {}).get(level) or {}
if cached_level:
    n_boot = cached.get("n_boot", "")
    rows = []
    for group in groups:
        summary = cached_level.get(group)
        if not summary:
            continue
        rows.append({
            "Body part": group_label(group),
            "Threshold": _threshold_text(summary.get("threshold")),
            "AUROC": format_interval(summary.get("auroc")),
            "Kappa": format_interval(summary.get("kappa")),
            "Sensitivity": format_interval(summary.get("sensitivity")),
            "Specificity": format_interval(summary.get("specificity")),
            "ECE": "—" if summary.get("ece") is None else f"{summary['ece']:.3f}",
            "Same as your thresholds": "yes" if matches.get(group) else "no",
        })
    st.markdown(f"**At the model card's thresholds** (the cached evaluation: 95% bootstrap CIs from "
                f"{n_boot} resamples of studies; AUROC and ECE do not depend on the threshold)")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
else:
    st.caption("The cached metrics file is missing, so no confidence intervals from the evaluation run are shown.")

# --- threshold-free curves, with the current operating points marked ---------------------------
auc_intervals = {group: summary.get("auroc") for group, summary in cached_level.items()}
roc_column, pr_column = st.columns(2)
roc_column.plotly_chart(
    charts.roc_figure({g: evaluated.roc[g] for g in plotted}, confusions, per_group_threshold, auc_intervals,
                      title=f"ROC ({level} level)"),
    key="performance_roc",
)
pr_column.plotly_chart(
    charts.pr_figure({g: evaluated.pr[g] for g in plotted}, confusions, per_group_threshold,
                     evaluation.ap_intervals(model, level, plotted), title=f"Precision–recall ({level} level)"),
    key="performance_pr",
)
st.caption(
    "Legends: AUROC and average precision with the cached evaluation's 95% bootstrap CIs "
    "(resampling studies). Diamonds mark your current operating points."
)

st.subheader("Calibration")
st.plotly_chart(evaluation.reliability_chart(model, level, plotted), key="performance_calibration")
st.caption("ECE: expected calibration error, the case-weighted mean gap between predicted probability "
           "and observed share abnormal per bin. 0 is perfect.")
