"""Overview: what the model is and is not, its headline results, where to start, the data in use."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import fracatlas
from core.artifacts import EvaluationMismatchError
from core.card import DEFAULT_THRESHOLD_KEY, trained_study_types
from core.evaluate import FRACATLAS
from dashboard import navigation, state
from dashboard.charts import OVERALL, format_interval, group_label
from dashboard.report import report_button

PAPER = "https://arxiv.org/abs/1712.06957"


def results_table(metrics: dict, groups: list[str]) -> pd.DataFrame:
    """Study-level results of the given groups (body parts, or "overall") from metrics_valid.json."""
    study = metrics["study"]
    return pd.DataFrame([
        {
            "Body part": group_label(group),
            "Studies": study[group]["n"],
            "Abnormal": study[group]["n_abnormal"],
            "AUROC (95% CI)": format_interval(study[group]["auroc"]),
            "Cohen's kappa (95% CI)": format_interval(study[group]["kappa"]),
            "Sensitivity (95% CI)": format_interval(study[group]["sensitivity"]),
            "Specificity (95% CI)": format_interval(study[group]["specificity"]),
        }
        for group in groups
    ])


def valid_split_table(present: pd.DataFrame) -> pd.DataFrame:
    """Studies (abnormal among them) and images per body part, from core.mura's table of present images."""
    studies = present.drop_duplicates("study_path").groupby("study_type")
    table = pd.DataFrame({
        "Studies": studies.size(),
        "Abnormal studies": studies["label"].sum(),
        "Images": present.groupby("study_type").size(),
    })
    return table.rename(index=group_label).rename_axis("Body part").reset_index()


def show_model(card: dict) -> None:
    trained = ", ".join(group_label(t).lower() for t in trained_study_types(card)) or "unknown"
    st.subheader("The model")
    st.markdown(
        f"**{card.get('architecture', 'unknown architecture')}**: {card.get('description', '')}  \n"
        f"Reads one upper-limb radiograph at a time and gives P(abnormal); a study's probability is the "
        f"mean of its views', as in the [MURA paper]({PAPER}). Trained on **{trained}** radiographs."
    )
    with st.expander("Input, output and thresholds"):
        st.markdown(f"- Input: {card.get('input', 'not stated')}\n- Output: {card.get('output', 'not stated')}")
        thresholds = card.get("thresholds", {})
        if thresholds:
            st.dataframe(pd.DataFrame({"Body part": [group_label(t) if t != DEFAULT_THRESHOLD_KEY else "Any other"
                                                     for t in thresholds],
                                       "Threshold": list(thresholds.values())}), hide_index=True)
    st.subheader("What it is not")
    for limitation in card.get("limitations", []):
        st.markdown(f"- {limitation}")


def show_results(model: str, card: dict) -> None:
    st.subheader("Headline results (study level)")
    try:
        metrics = state.read_metrics(model)
    except EvaluationMismatchError as exc:
        st.error(str(exc))
        return
    if not metrics:
        st.info("No cached evaluation for this model yet: run `make evaluate` with a MURA folder to create it.")
        return
    evaluation = metrics.get("evaluation", {})
    if evaluation:
        st.caption(f"MURA v1.1 {evaluation.get('split', 'valid')}/ split: {evaluation.get('studies')} studies, "
                   f"{evaluation.get('images')} images, each judged at its body part's threshold. "
                   "MURA's valid/ set is this project's test set: it was never used for training or selection.")
    evaluated = [group for group in metrics.get("study", {}) if group != OVERALL]
    trained = [group for group in evaluated if group in trained_study_types(card)]
    others = [group for group in evaluated if group not in trained]
    st.dataframe(results_table(metrics, trained + [OVERALL]), hide_index=True)
    try:
        external = (state.read_metrics(model, FRACATLAS) or {}).get("all") or {}
    except EvaluationMismatchError as exc:
        st.caption(f"The external FracAtlas check is unavailable: {exc}")
        external = {}
    if external.get(OVERALL):
        upper = external[OVERALL]
        st.caption(f"External check on FracAtlas (another hospital group; label *fracture*, not *abnormal*; image "
                   f"level, {upper['n']} upper-limb images): AUROC {format_interval(upper['auroc'])}. "
                   "Details and the hardware stratum on the Performance page.")
    if others:
        with st.expander(f"Body parts the model was not trained on ({len(others)})"):
            st.caption("Out of distribution, and too few studies for stable figures; "
                       "\"All body parts\" above includes them.")
            st.dataframe(results_table(metrics, others), hide_index=True)


def show_data_source() -> None:
    st.subheader("Data in use")
    root = state.current_mura_root()
    if root is None:
        st.markdown("No MURA folder is set, so the app shows 14 **real** radiographs from FracAtlas (CC BY 4.0, "
                    "resized; labelled *fracture*, not MURA's *abnormal*) and its own **synthetic** radiograph-like "
                    "samples (drawn by `data_samples/make_synthetic.py`; not X-rays). Set your MURA v1.1 folder in "
                    "the sidebar to browse MURA studies; MURA's licence forbids shipping its images.")
        st.caption(f"Images: {fracatlas.CREDIT}")
        return
    st.markdown("What the MURA v1.1 folder's valid/ split (the test set) holds:")
    st.dataframe(valid_split_table(state.read_mura_images(root, "valid")), hide_index=True)


# The card and cached metrics are all this page needs: it does not load the network, so the
# first page a visitor sees does not wait for it.
model_name = state.checked_model_name()
card = state.read_card(model_name)
st.title("MURA Lens")
st.markdown("Explains a classifier of upper-limb radiographs (Stanford MURA v1.1): which views it calls "
            "abnormal, and where it looks, with Grad-CAM-family heat maps. "
            "**A research and teaching tool: not a medical device, not for diagnosis.**")
start = st.columns(3)
start[0].page_link(navigation.page(navigation.EXPLAIN), label="Explain a radiograph")
start[1].page_link(navigation.page(navigation.BROWSE), label="Browse studies")
start[2].page_link(navigation.page(navigation.PERFORMANCE), label="See performance")
if card is None:
    st.error(f"The model {model_name!r} has no model card in the weights folder.")
else:
    show_model(card)
    show_results(model_name, card)
    report_button(model_name, key="overview_report")
show_data_source()
