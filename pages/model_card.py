"""Model card: what the shipped model is, what it was trained on and how, its thresholds, its
training curves and its headline results on MURA valid/, all read from weights/<model>/."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core.artifacts import CARD_FILE, EvaluationMismatchError
from core.card import DEFAULT_THRESHOLD_KEY
from dashboard import charts, state
from dashboard.charts import OVERALL, format_interval, group_label
from dashboard.report import report_button

#: Card fields this page lays out; any other field is still shown, as JSON, at the end.
_RENDERED = {
    "name", "architecture", "description", "initialisation", "input", "output", "training_data", "recipe",
    "training_time_seconds", "training_machine", "best_epoch", "holdout_metrics", "thresholds",
    "threshold_rule", "limitations", "members", "schema_version",
}
_HOLDOUT_NAMES = {"study_auroc": "Holdout study AUROC", "study_kappa_at_threshold": "Holdout study kappa",
                  "studies": "Holdout studies"}
_COUNT_NAMES = {"images": "Images", "studies": "Studies", "patients": "Patients", "abnormal_images": "Abnormal images"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def _counts_table(training_data: dict) -> pd.DataFrame:
    """One row per (subset, body part) from the card's "all" / "fit" / "holdout" counts."""
    rows = []
    for subset in ("all", "fit", "holdout"):
        for study_type, counts in (training_data.get(subset) or {}).items():
            rows.append({"Subset": subset, "Body part": group_label(study_type),
                         **{_COUNT_NAMES.get(k, k): v for k, v in counts.items()}})
    return pd.DataFrame(rows)


def _setting_text(value: object) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def show_cached_results(cached: dict | None) -> None:
    """The study-level results core.evaluate cached, with their intervals; how to make them if absent."""
    if not cached or "study" not in cached:
        st.caption("Not evaluated yet: run `make evaluate`.")
        return
    evaluation_info = cached.get("evaluation") or {}
    rows = [
        {
            "Body part": group_label(group), "Studies": summary.get("n"),
            "Threshold": "each at its own" if summary.get("threshold") is None else f"{summary['threshold']:.2f}",
            "AUROC": format_interval(summary.get("auroc")), "Kappa": format_interval(summary.get("kappa")),
            "Sensitivity": format_interval(summary.get("sensitivity")),
            "Specificity": format_interval(summary.get("specificity")),
        }
        for group, summary in cached["study"].items()
    ]
    rows.sort(key=lambda row: row["Body part"] != group_label(OVERALL))
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(
        f"Study level, 95% bootstrap CIs from {cached.get('n_boot', '?')} resamples of studies. "
        f"{evaluation_info.get('images', '?')} images of {evaluation_info.get('studies', '?')} studies evaluated. "
        "More on the Performance page."
    )


model = state.checked_model_name()
card = state.read_card(model)
if card is None:
    st.title("Model card")
    st.info(f"No model card for **{model}** (weights/{model}/{CARD_FILE} is missing).")
    st.stop()

st.title(f"Model card: {card.get('name', model)}")
if card.get("description"):
    st.markdown(card["description"])
members = card.get("members") or []
# A single run keeps one epoch; an ensemble (core.ensemble) keeps one per member.
kept_epochs = [member.get("best_epoch") for member in members] if members else [card.get("best_epoch")]
first, second, third = st.columns(3)
first.metric("Architecture", card.get("architecture", "—") + (f" × {len(members)}" if members else ""))
second.metric("Kept epochs (per member)" if members else "Kept epoch",
              ", ".join("—" if epoch is None else str(epoch) for epoch in kept_epochs))
third.metric("Training time" + (" (all members)" if members else ""), _duration(card.get("training_time_seconds")))

facts = [(label, card.get(key)) for label, key in (
    ("Initialisation", "initialisation"), ("Input", "input"), ("Output", "output"),
    ("Trained on", "training_machine"),
) if card.get(key)]
st.markdown("\n".join(f"- **{label}:** {value}" for label, value in facts))
if card.get("limitations"):
    st.warning("**Limitations**\n\n" + "\n".join(f"- {item}" for item in card["limitations"]))

training_data = card.get("training_data") or {}
if training_data:
    st.subheader("Training data")
    if training_data.get("source"):
        st.markdown(training_data["source"])
    if training_data.get("split"):
        st.caption(f"Split: {training_data['split']}")
    counts = _counts_table(training_data)
    if not counts.empty:
        st.dataframe(counts, hide_index=True, width="stretch")
        st.caption("fit: what the weights were trained on; holdout: train/ patients kept aside to pick the "
                   "epoch and the thresholds (in a cross-validated ensemble every fold is a holdout, each "
                   "predicted by the member that never trained on it).")

thresholds = card.get("thresholds") or {}
holdout = card.get("holdout_metrics") or {}
if thresholds or holdout:
    st.subheader("Operating thresholds and holdout results")
    if card.get("threshold_rule"):
        st.caption(f"Thresholds: {card['threshold_rule']}.")
    body_parts = [k for k in thresholds if k != DEFAULT_THRESHOLD_KEY] + [k for k in holdout if k not in thresholds]
    rows = [{"Body part": group_label(k), "Threshold": thresholds.get(k),
             **{_HOLDOUT_NAMES.get(name, f"Holdout {name}"): value for name, value in (holdout.get(k) or {}).items()}}
            for k in body_parts]
    if DEFAULT_THRESHOLD_KEY in thresholds:
        rows.append({"Body part": "Any other body part", "Threshold": thresholds[DEFAULT_THRESHOLD_KEY]})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

if members:
    st.subheader("Ensemble members")
    st.caption("The shipped probability is the mean of the members' probabilities.")
    st.dataframe(pd.DataFrame([
        {"Member": index, "Seed": member.get("seed"),
         **({"Fold": member["fold"]} if member.get("fold") is not None else {}),
         "Kept epoch": member.get("best_epoch"),
         "Training time": _duration(member.get("training_time_seconds")),
         **{f"{group_label(k)} holdout study AUROC": v.get("study_auroc")
            for k, v in (member.get("holdout_metrics") or {}).items()}}
        for index, member in enumerate(members)
    ]), hide_index=True, width="stretch")

log = state.read_training_log(model)
st.subheader("Training curves")
if log is None or log.empty:
    st.caption("No training log beside the checkpoint.")
else:
    st.plotly_chart(charts.training_curves_figure(log, kept_epochs=kept_epochs), key="card_training")

st.subheader("Results on MURA valid/ (cached evaluation)")
try:
    show_cached_results(state.read_metrics(model))
except EvaluationMismatchError as exc:
    st.error(str(exc))

if card.get("recipe"):
    with st.expander("Training recipe"):
        st.dataframe(pd.DataFrame({"Setting": list(card["recipe"]),
                                   "Value": [_setting_text(v) for v in card["recipe"].values()]}),
                     hide_index=True, width="stretch")
extra = {key: value for key, value in card.items() if key not in _RENDERED}
if extra:
    with st.expander("Other card fields"):
        st.json(extra)
st.download_button(f"Download {CARD_FILE}", data=json.dumps(card, indent=2), file_name=f"{model}_model_card.json",
                   mime="application/json", key="card_download")
report_button(model, key="card_report")
