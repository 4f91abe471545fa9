"""Browse: a gallery of the studies at hand (the MURA folder's valid/ studies with the cached
predictions, the real FracAtlas radiographs shipped with the app, or the synthetic samples), filtered
and sorted; a click opens a study in Explain."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core.data import fracatlas
from core.eval.evaluation import FRACATLAS, FRACTURE_COLUMN, fracture_thresholds, region_thresholds
from core.eval.metrics import study_table
from core.model.card import FRACATLAS_LABEL, MURA_LABEL, out_of_scope_reason, threshold_for
from core.model.checkpoint import LoadedModel
from core.model.registry import FRACTURE
from core.store.artifacts import EvaluationMismatchError
from dashboard import data_map, evaluation, fracture_view, state, studies, views
from dashboard.charts import group_label

PAGE_SIZE = 12
COLUMNS = 4
THUMBNAIL_SIZE = 256
SORTS = {
    "Most confidently wrong first": ("error", False),
    "Highest {score} first": ("probability", False),
    "Lowest {score} first": ("probability", True),
    "Study path": ("ref", True),
}
OUTCOMES = ("All", "Correct", "Wrong")
FILTER_KEYS = ("browse_types", "browse_labels", "browse_outcome", "browse_confidence", "browse_curated", "browse_page")
MURA, SYNTHETIC = "mura", "synthetic"
DATASETS = {
    MURA: "MURA valid/ (your folder)",
    FRACATLAS: "FracAtlas (real radiographs, fracture label)",
    SYNTHETIC: "Synthetic samples (drawn, not X-rays)",
}
LABEL_WORDS = {MURA: ("normal", "abnormal"), FRACATLAS: ("no fracture", "fracture"), SYNTHETIC: ("normal", "abnormal")}


def mura_gallery(loaded: LoadedModel, root: Path) -> pd.DataFrame:
    """valid/ studies present in the MURA folder, with the cached study probabilities when there are some."""
    present = state.read_mura_images(root, "valid")
    try:
        predictions = state.read_predictions(loaded.name)
    except EvaluationMismatchError as exc:  # shown without probabilities rather than with another run's
        st.error(str(exc))
        predictions = None
    else:
        if predictions is None:
            st.caption("This model has no cached predictions (run `make evaluate`): filters by prediction are off.")
    if predictions is None:
        table = present.assign(probability=np.nan)
        studies_present = (
            table.groupby("study_path", sort=True)
            .agg(
                study_type=("study_type", "first"),
                label=("label", "first"),
                probability=("probability", "first"),
                n_views=("path", "size"),
            )
            .reset_index()
        )
    else:
        studies_present = study_table(predictions)
        missing = ~studies_present["study_path"].isin(present["study_path"])
        if missing.any():
            st.caption(
                f"{int(missing.sum())} studies of the cached predictions are not in your MURA folder and are left out."
            )
        studies_present = studies_present[~missing]
    curated = studies.curated_mura_studies().set_index("study_path")["reason"]
    return studies_present.rename(columns={"study_path": "ref"}).assign(note=lambda t: t["ref"].map(curated))[
        ["ref", "study_type", "label", "probability", "n_views", "note"]
    ]


def sample_gallery(loaded: LoadedModel) -> pd.DataFrame:
    """The synthetic samples, predicted live (a handful of small images; cached per content)."""
    rows = []
    for sample in studies.synthetic_studies().itertuples():
        study = studies.load_study(sample.ref, None)
        probability = float(np.mean(views.cached_probabilities(loaded, [p for _, p in study.views])))
        rows.append(
            {
                "ref": sample.ref,
                "study_type": sample.study_type,
                "label": sample.label,
                "probability": probability,
                "n_views": len(study.views),
                "note": None,
            }
        )
    return pd.DataFrame(rows)


def fracatlas_gallery(loaded: LoadedModel) -> pd.DataFrame:
    """The FracAtlas radiographs shipped with the app, with the probabilities core.evaluate cached for the
    same files (data_samples/fracatlas holds byte-identical copies); predicted live without that cache.
    For a fracture-aware model the probability is P(fracture) at its one threshold: the samples are in its
    test part (tests/test_fracture_split.py), and P(abnormal) is not a fracture call."""
    samples = studies.fracatlas_samples()
    fracture = FRACTURE in loaded.outputs
    try:
        cached = state.read_predictions(loaded.name, FRACATLAS)
    except EvaluationMismatchError as exc:  # predicted live rather than shown with another run's numbers
        st.caption(str(exc))
        cached = None
    column = FRACTURE_COLUMN if fracture else "probability"
    by_file = cached.set_index("file")[column] if cached is not None and column in cached else pd.Series(dtype=float)
    probability = samples["file"].map(by_file)
    if probability.isna().any():
        st.caption("Probabilities predicted now: this model has no cached FracAtlas evaluation for these images.")
        predict = fracture_view.cached_fractures if fracture else views.cached_probabilities
        live = [
            float(predict(loaded, [p for _, p in studies.load_study(ref, None).views])[0])
            for ref in samples.loc[probability.isna(), "ref"]
        ]
        probability = probability.copy()
        probability.loc[probability.isna()] = live
    thresholds = fracture_thresholds(loaded.fracture_threshold) if fracture else region_thresholds(loaded.card)
    note = np.where(
        samples["hardware"] == 1,
        "Metal hardware: MURA would call it abnormal whatever the fracture.",
        np.where(samples["upper_limb"], None, "Leg/hip: outside the model's scope, no verdict."),
    )
    return pd.DataFrame(
        {
            "ref": samples["ref"],
            "study_type": samples["region"],
            "label": samples["fractured"],
            "probability": probability.astype(float),
            "n_views": 1,
            "note": note,
            "threshold": samples["region"].map(thresholds),
        }
    )


def with_outcomes(table: pd.DataFrame, loaded: LoadedModel, label: str = MURA_LABEL) -> pd.DataFrame:
    """Add the verdict at each body part's threshold, whether it is right, and how wrong it is.

    The thresholds are the user's (set on Performance or Error analysis; the card's until moved), as on
    every other page; a FracAtlas table brings its own per region. Where core.model.card.out_of_scope_reason
    says the model is not scored (a body part or a label it was not trained on) there is no threshold and
    ``not_scored`` says why.
    """
    reasons = table["study_type"].map(lambda part: out_of_scope_reason(loaded.card, str(part), label))
    chosen = evaluation.chosen_thresholds(loaded.name, loaded.card)
    thresholds = (
        table["threshold"]
        if "threshold" in table
        else table["study_type"].map(lambda part: threshold_for(chosen, str(part)))
    )
    thresholds = thresholds.where(reasons.isna())
    called_abnormal = table["probability"] >= thresholds
    judged = table["probability"].notna() & thresholds.notna()
    return table.assign(
        threshold=thresholds,
        not_scored=reasons,
        correct=np.where(judged, called_abnormal == table["label"].astype(bool), np.nan),
        error=np.where(judged, np.where(table["label"] == 1, 1 - table["probability"], table["probability"]), np.nan),
    )


def filtered(
    table: pd.DataFrame, *, curated_filter: bool, words: tuple[str, str], score: str = "P(abnormal)"
) -> pd.DataFrame:
    """The filter widgets applied to the table (``note`` holds the curation reason when curated_filter);
    ``words`` names label 0 and label 1, ``score`` the probability."""
    has_probabilities = table["probability"].notna().any()
    types = sorted(table["study_type"].unique())
    # A row of its own: up to seven body-part chips in a quarter of the width were cut off.
    chosen_types = st.multiselect("Body part", types, default=types, format_func=group_label, key="browse_types")
    label, outcome, confidence = st.columns([3, 3, 4])
    labels = label.multiselect("Label", words, default=words, key="browse_labels")
    outcome_choice = outcome.radio(
        "Model",
        OUTCOMES,
        horizontal=True,
        key="browse_outcome",
        disabled=not has_probabilities,
        help="At your threshold for each body part (Performance page; the model "
        "card's until you move them). Out-of-scope studies are never right "
        "or wrong.",
    )
    low, high = confidence.slider(
        f"{score} between", 0.0, 1.0, (0.0, 1.0), 0.01, key="browse_confidence", disabled=not has_probabilities
    )
    keep = table["study_type"].isin(chosen_types) & table["label"].map(dict(enumerate(words))).isin(labels)
    if has_probabilities:
        keep &= table["probability"].between(low, high)
        if outcome_choice != "All":
            keep &= table["correct"] == (outcome_choice == "Correct")
    if curated_filter and st.checkbox(
        "Only the curated studies",
        key="browse_curated",
        help="Studies the project picked for teaching: confidently wrong ones, metal hardware, other body parts.",
    ):
        keep &= table["note"].notna()
    return table[keep]


def forget_filters() -> None:
    """on_change of the dataset: body parts and labels differ between datasets, so the filters start afresh
    (a kept body-part choice would match nothing in the new gallery)."""
    for key in FILTER_KEYS:
        st.session_state.pop(key, None)


@st.cache_data(show_spinner=False, max_entries=512)
def _thumbnail(ref: str, root: str | None) -> np.ndarray:
    picture = Image.fromarray(studies.load_study(ref, Path(root) if root else None).views[0][1])
    picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    return np.asarray(picture)


def study_card(row: pd.Series, root: Path | None, words: tuple[str, str], score: str = "P(abnormal)") -> None:
    """Thumbnail of the first view, what is known about the study (``score`` names its probability), and the
    button to open it."""
    with st.container(border=True):
        try:
            st.image(_thumbnail(row["ref"], str(root) if root else None), width="stretch")
        except studies.StudyLoadError as exc:
            st.error(str(exc))
        st.markdown(
            f"**{studies.study_title(row['ref'])}**  \n{row['n_views']} view(s) · label **{words[int(row['label'])]}**"
        )
        if studies.is_fracatlas_ref(row["ref"]):
            st.caption("FracAtlas, CC BY 4.0, resized (credit below)")
        if not math.isnan(row["probability"]) and math.isnan(row["threshold"]):
            st.markdown(f"{score} = **{row['probability']:.3f}**: no verdict.")
            if isinstance(row["not_scored"], str):
                st.caption(row["not_scored"])
        elif not math.isnan(row["probability"]):
            verdict = "right" if row["correct"] else "wrong"
            st.markdown(f"{score} = **{row['probability']:.3f}** at threshold {row['threshold']:.3f}: {verdict}")
        if isinstance(row["note"], str):
            st.caption(row["note"])
        if st.button("Open in Explain", key=f"browse_open_{row['ref']}", icon=":material/visibility:"):
            views.open_in_explain(row["ref"])


loaded = state.current_model()
root = state.current_mura_root()
st.title("Browse")
choices = [MURA] * (root is not None) + [FRACATLAS] * (not studies.fracatlas_samples().empty) + [SYNTHETIC]
dataset = st.radio(
    "Dataset",
    choices,
    format_func=DATASETS.get,
    horizontal=True,
    key="browse_dataset",
    on_change=forget_filters,
    help="Without a MURA folder the app shows real FracAtlas radiographs and its synthetic samples.",
)
words = LABEL_WORDS[dataset]
score = "P(fracture)" if dataset == FRACATLAS and FRACTURE in loaded.outputs else "P(abnormal)"
if dataset == MURA:
    st.caption("Showing the valid/ studies of the MURA folder named in the sidebar.")
    gallery = mura_gallery(loaded, root)
elif dataset == FRACATLAS and FRACTURE in loaded.outputs:
    st.caption(
        "Real radiographs from FracAtlas shipped with the app, one view each, all in the test part of the "
        "model's fracture output (never trained on). The label is **fracture** (expert-drawn): each upper-limb "
        "image shows the fracture output's P(fracture), judged at its threshold. Set a MURA folder in the "
        "sidebar to browse MURA studies."
    )
    gallery = fracatlas_gallery(loaded)
elif dataset == FRACATLAS:
    st.caption(
        "Real radiographs from FracAtlas shipped with the app, one view each. The label is **fracture** "
        "(expert-drawn), not MURA's **abnormal**, the label the model was trained on, so the model's "
        "probability is shown for reference and never scored right or wrong here. Set a MURA folder in "
        "the sidebar to browse MURA studies."
    )
    gallery = fracatlas_gallery(loaded)
else:
    st.caption(
        "Showing the app's synthetic samples (not X-rays). Set a MURA folder in the sidebar to browse real studies."
    )
    gallery = sample_gallery(loaded)
if gallery.empty:
    st.info("There is no study to show: the MURA folder has none of the studies this model's cached predictions cover.")
    st.stop()
gallery = with_outcomes(gallery, loaded, FRACATLAS_LABEL if dataset == FRACATLAS else MURA_LABEL)
moved = evaluation.user_thresholds(loaded.name, loaded.card) is not None
st.caption(
    "Verdicts at **your** thresholds from the Performance page (its Reset button returns to the model card's)."
    if moved
    else "Verdicts at the model card's thresholds; thresholds you set on the Performance page apply here too."
)
shown = filtered(gallery, curated_filter=dataset == MURA and gallery["note"].notna().any(), words=words, score=score)
# The sort names the probability shown (P(fracture) on a fracture output), not always "abnormal".
sort_by, ascending = SORTS[
    st.selectbox("Sort", list(SORTS), key="browse_sort", format_func=lambda name: name.format(score=score))
]
shown = shown.sort_values([sort_by, "ref"], ascending=[ascending, True], na_position="last")
if shown.empty:
    st.info("No study matches these filters.")
    st.stop()
pages = math.ceil(len(shown) / PAGE_SIZE)
page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="browse_page") if pages > 1 else 1
st.caption(f"{len(shown)} of {len(gallery)} studies match.")
page_rows = shown.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
for start in range(0, len(page_rows), COLUMNS):
    # The last row of cards may be short: its spare columns stay empty.
    for column, (_, row) in zip(st.columns(COLUMNS), page_rows.iloc[start : start + COLUMNS].iterrows(), strict=False):
        with column:
            study_card(row, root, words, score)
data_map.similar_picker(loaded.name, page_rows["ref"], key="browse")
if dataset == FRACATLAS:
    st.caption(f"Images: {fracatlas.CREDIT}")
