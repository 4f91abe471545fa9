"""Overview: what the model is and is not, its headline results, where to start, the data in use."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import mura
from dashboard import state
from dashboard.charts import OVERALL, format_interval, group_label

PAPER = "https://arxiv.org/abs/1712.06957"


@st.cache_data(show_spinner=False)
def _coverage(root: str) -> pd.DataFrame:
    return mura.coverage(Path(root))


def headline_table(metrics: dict) -> pd.DataFrame:
    """Study-level results per body part (then all together) from metrics_valid.json."""
    study = metrics.get("study", {})
    groups = [g for g in study if g != OVERALL] + ([OVERALL] if OVERALL in study else [])
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


def show_model(card: dict) -> None:
    trained = ", ".join(group_label(t).lower() for t in state.trained_study_types(card)) or "unknown"
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
            st.dataframe(pd.DataFrame({"Body part": [group_label(t) if t != "default" else "Any other"
                                                     for t in thresholds],
                                       "Threshold": list(thresholds.values())}), hide_index=True)
    st.subheader("What it is not")
    for limitation in card.get("limitations", []):
        st.markdown(f"- {limitation}")


def show_results(model: str) -> None:
    st.subheader("Headline results (study level)")
    metrics = state.read_metrics(model)
    if not metrics:
        st.info("No cached evaluation for this model yet: run `make evaluate` with a MURA folder to create it.")
        return
    evaluation = metrics.get("evaluation", {})
    if evaluation:
        st.caption(f"MURA v1.1 {evaluation.get('split', 'valid')}/ split: {evaluation.get('studies')} studies, "
                   f"{evaluation.get('images')} images, each judged at its body part's threshold. "
                   "MURA's valid/ set is this project's test set: it was never used for training or selection.")
    st.dataframe(headline_table(metrics), hide_index=True)


def show_data_source() -> None:
    st.subheader("Data in use")
    root = state.current_mura_root()
    if root is None:
        st.markdown("No MURA folder is set, so the app shows its own **synthetic** radiograph-like samples "
                    "(drawn by `data_samples/make_synthetic.py`; not X-rays). Set your MURA v1.1 folder in the "
                    "sidebar to browse real studies; MURA's licence forbids shipping its images.")
        return
    st.markdown(f"MURA v1.1 folder: `{root}`")
    coverage = _coverage(str(root))
    if not coverage.empty:
        st.dataframe(coverage, hide_index=True)


loaded = state.current_model()
st.title("MURA Lens")
st.markdown("Explains a classifier of upper-limb radiographs (Stanford MURA v1.1): which views it calls "
            "abnormal, and where it looks, with Grad-CAM-family heat maps. "
            "**A research and teaching tool: not a medical device, not for diagnosis.**")
start = st.columns(3)
start[0].page_link("../pages/explain.py", label="Explain a radiograph", icon=":material/visibility:")
start[1].page_link("../pages/browse.py", label="Browse studies", icon=":material/photo_library:")
start[2].page_link("../pages/performance.py", label="See performance", icon=":material/monitoring:")
show_model(loaded.card)
show_results(loaded.name)
show_data_source()
