"""Performance: ROC and PR per body part, confusion matrices at a threshold you move, kappa with
CIs, image- or study-level, calibration, on MURA valid/ or on FracAtlas (external, fracture label,
hardware apart, leg/hip out of scope). Everything comes from the cached evaluation; no model runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import metrics
from core.card import trained_study_types
from core.evaluate import FRACATLAS_STRATA
from dashboard import charts, evaluation, model_compare, state
from dashboard.charts import OVERALL, format_interval, group_label

model = state.checked_model_name()
st.title("Performance")
card = state.read_card(model)
dataset = st.radio("Dataset", list(evaluation.DATASET_LABELS), format_func=evaluation.DATASET_LABELS.get,
                   horizontal=True, key="performance_dataset",
                   help="MURA valid/ is the test set of the data the model was trained on; FracAtlas is another "
                        "hospital group's radiographs with expert fracture labels, never seen in training.")
external = dataset == evaluation.FRACATLAS
stratum = "all"
if external:
    st.info("**External validation on FracAtlas.** The label here is **fracture**, not MURA's broader "
            "**abnormal**: a radiograph with metal hardware, arthritis or another lesion but no fracture counts as "
            "*no fracture*, so the model can be 'wrong' here while right on MURA's terms. Hardware images are "
            "therefore shown apart (choose the stratum below). Image level only (FracAtlas has no studies; copies of "
            "one radiograph are resampled together). 'All body parts' means every upper-limb image; leg/hip, which "
            "the model never saw, is described at the bottom, not scored. Each region is judged at the model "
            "card's threshold of the nearest trained part: hand/wrist/forearm at the forearm's, shoulder at the "
            "humerus', whole arm at the card's default.")
    stratum = st.radio("Images", list(FRACATLAS_STRATA), horizontal=True, key="performance_stratum",
                       format_func=lambda s: FRACATLAS_STRATA[s].capitalize())
state.evaluation_or_stop(model, dataset)  # a pair from two runs stops the page with one sentence
cached = evaluation.cached_metrics(model, dataset, stratum)

level = "image" if external else evaluation.level_control()
evaluated = evaluation.level_evaluation(model, level, dataset, stratum)
if evaluated is None:
    command = (f"python -m core.evaluate --dataset fracatlas --root PATH --model {model}" if external
               else "make evaluate (python -m core.evaluate --mura-root PATH --split valid)")
    st.info(f"No cached evaluation of **{model}** on {evaluation.DATASET_LABELS[dataset]} "
            f"{'for these images ' if external else ''}yet. Run `{command}` and reload.")
    st.stop()

table = evaluated.table
if external:
    trained = set(evaluated.groups) - {OVERALL}
    others = []
    st.caption(f"{model} on FracAtlas, {FRACATLAS_STRATA[stratum]}: {len(table)} images "
               f"({int(table['label'].sum())} with a fracture), {table['study_type'].nunique()} region(s), "
               "from the cached predictions (no model runs on this page).")
    if stratum == "hardware" and table["label"].nunique() < 2:
        st.warning(f"Every one of these {len(table)} hardware images {'has' if table['label'].all() else 'lacks'} a "
                   "fracture, so AUROC and one of sensitivity/specificity are undefined here: read the confusion "
                   "counts.")
else:
    split = ((cached or {}).get("evaluation") or {}).get("split", "valid")
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
thresholds = (evaluation.threshold_controls(f"{model}:{dataset}", card, scope="performance",
                                            defaults=evaluation.fracatlas_threshold_defaults(card))
              if external else evaluation.threshold_controls(model, card, scope="performance"))
classes = ("No fracture", "Fracture") if external else ("Normal", "Abnormal")
resampled = "radiographs" if external else "studies"

# --- what the thresholds change: recomputed on every rerun from the cached probabilities -----
confusions = metrics.confusion_by_type(table, thresholds)
groups = list(confusions)
per_group_threshold = evaluation.group_thresholds(table, thresholds)
plotted = [g for g in groups if (g == OVERALL or g in trained) and evaluated.roc[g].auc is not None]

st.subheader("Confusion matrices at your thresholds")
# One column even when nothing can be plotted (st.columns needs at least one), so zip may stop short.
for column, group in zip(st.columns(len(plotted) or 1), plotted, strict=False):
    threshold = per_group_threshold[group]
    title = group_label(group) + ("" if threshold is None else f" · ≥ {threshold:.2f}")
    column.plotly_chart(charts.confusion_figure(confusions[group], title=title, height=280, classes=classes),
                        key=f"performance_confusion_{group}", config={"displayModeBar": False})

show_bootstrap = st.toggle(
    f"Bootstrap 95% CIs at your thresholds ({evaluation.APP_BOOTSTRAP} resamples of "
    f"{resampled})",
    key="performance_bootstrap",
    help="For all body parts and those the model was trained on; cached per threshold setting. "
         "The first computation takes a few seconds.",
)
intervals = evaluation.bootstrap_at(model, level, thresholds, plotted, dataset, stratum) if show_bootstrap else {}


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
    resamples = f"from {n_boot} resamples of {resampled}" if n_boot else f"resampling {resampled}"
    st.markdown(f"**At the model card's thresholds** (the cached evaluation: 95% bootstrap CIs {resamples}; "
                "AUROC and ECE do not depend on the threshold)")
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
                     evaluation.ap_intervals(model, level, plotted, dataset, stratum),
                     title=f"Precision–recall ({level} level)"),
    key="performance_pr",
)
st.caption(
    "Legends: AUROC and average precision with the cached evaluation's 95% bootstrap CIs "
    f"(resampling {resampled}). Diamonds mark your current operating points."
)

st.subheader("Calibration")
st.plotly_chart(evaluation.reliability_chart(model, level, plotted, dataset, stratum), key="performance_calibration")
st.caption("ECE: expected calibration error, the case-weighted mean gap between predicted probability "
           f"and observed share {'fractured' if external else 'abnormal'} per bin. 0 is perfect."
           + (" On FracAtlas the model's probability is of MURA's *abnormal*, so it is not expected to match the "
              "share fractured." if external else ""))

if external:
    st.subheader("Out of scope: leg and hip")
    everything = state.read_predictions(model, dataset)
    legs = everything[~everything["upper_limb"].astype(bool)]
    if legs.empty:
        st.caption("This evaluation has no leg/hip images.")
    else:
        st.plotly_chart(charts.score_histogram(legs.assign(label=legs["fractured"]), classes=classes,
                                               title="P(abnormal) on leg/hip radiographs"),
                        key="performance_out_of_scope")
        share = float((legs["probability"] >= thresholds[metrics.DEFAULT_THRESHOLD_KEY]).mean())
        st.caption(f"{len(legs)} leg/hip images ({int(legs['fractured'].sum())} fractured). The model was trained on "
                   f"humerus and forearm only, so no AUROC is given: scores here show how it behaves on a body part "
                   f"it never saw. At the default threshold ({thresholds[metrics.DEFAULT_THRESHOLD_KEY]:.2f}) it calls "
                   f"{share:.0%} of them abnormal.")

model_compare.compare_section(model, dataset)
