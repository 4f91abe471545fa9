"""Error analysis: pick a confusion-matrix cell (click it, or use the selector) to list the exact
studies behind it, most confidently wrong first; export them as CSV; look at their views and CAMs.

The list comes from the cached predictions, so it is instant; CAMs are computed only for the few
studies shown, and only when asked for (they need the model and a MURA root)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import streamlit as st

from core.eval import metrics
from core.model.card import out_of_scope_reason
from dashboard import charts, data_map, evaluation, state, views
from dashboard.charts import CELL_NAMES, CELLS, OVERALL, group_label
from dashboard.studies import StudyLoadError, load_study

CELL_KEY = "error_cell"
CHART_KEY = "error_confusion"
_LAST_CLICK_KEY = "error_last_click"
EXPORT_COLUMNS = [
    "study_path",
    "study_type",
    "patient",
    "study",
    "label",
    "probability",
    "threshold",
    "confidence",
    "n_views",
]
#: Short headers and narrow columns, so the study path gets the room; patient and study number are in the
#: path, so only the CSV (and the dataframe's data) carries them.
_LIST_ORDER = ["study_path", "study_type", "label", "probability", "threshold", "confidence", "n_views"]
_LIST_COLUMNS = {
    "study_path": st.column_config.TextColumn("Study", width=400),
    "study_type": st.column_config.TextColumn("Body part", width=105),
    "label": st.column_config.NumberColumn("Label", width=60, help="1 = abnormal, 0 = normal (MURA)."),
    "n_views": st.column_config.NumberColumn("Views", width=60),
    **{
        name: st.column_config.NumberColumn(title, format="%.3f", width=95, help=help_text)
        for name, title, help_text in (
            ("probability", "P(abnormal)", "The study's cached probability: the mean of its views'."),
            ("threshold", "Threshold", "The threshold it was judged at (yours, shared with Performance)."),
            ("confidence", "Confidence", "P(abnormal) when called abnormal, else 1 − P(abnormal)."),
        )
    },
}


#: The pool of the body parts the model was trained on: the only studies it is scored on (issue 27).
TRAINED_POOL = "All trained body parts"


def split_by_scope(table: pd.DataFrame, card: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The studies the model is scored on (core.model.card.out_of_scope_reason: trained body parts, MURA's
    abnormal label), and the others, which are listed but never put in a confusion cell."""
    scored = table["study_type"].map(lambda t: out_of_scope_reason(card, str(t)) is None).astype(bool)
    return table[scored], table[~scored]


def show_out_of_scope(others: pd.DataFrame, card: dict) -> None:
    """The studies of body parts the model was not trained on: their probability, no verdict, no cell."""
    if others.empty:
        return
    reasons = sorted({out_of_scope_reason(card, str(t)) or "" for t in others["study_type"].unique()})
    with st.expander(f"Out of scope, not scored: {len(others)} studies of body parts the model was not trained on"):
        st.caption(
            " ".join(reasons) + " Their probabilities are shown for reference; they get no verdict and "
            "are in no cell above."
        )
        st.dataframe(
            others[["study_path", "study_type", "label", "probability", "n_views"]],
            hide_index=True,
            width="stretch",
            column_config=_LIST_COLUMNS,
            key="error_out_of_scope",
        )


def choose_cell(table: pd.DataFrame, thresholds: Mapping[str, float]) -> tuple[str, pd.DataFrame, str]:
    """Body part and confusion cell (by click or radio); returns the body part, its rows and the cell."""
    body_part = st.selectbox(
        "Body part",
        [OVERALL, *sorted(table["study_type"].unique())],
        format_func=lambda g: TRAINED_POOL if g == OVERALL else group_label(g),
        key="error_body_part",
    )
    subset = table if body_part == OVERALL else table[table["study_type"] == body_part]
    confusion = metrics.confusion_at(subset["label"], subset["probability"], metrics.row_thresholds(subset, thresholds))
    counts = {"TN": confusion.tn, "FP": confusion.fp, "FN": confusion.fn, "TP": confusion.tp}

    # A click on the matrix picks the cell (plotly selection); the radio does the same by keyboard and
    # in tests. A new click wins over the radio; the radio wins until the next new click.
    clicked = charts.selected_cell(st.session_state.get(CHART_KEY))
    if clicked is not None and clicked != st.session_state.get(_LAST_CLICK_KEY):
        st.session_state[CELL_KEY] = clicked
    st.session_state[_LAST_CLICK_KEY] = clicked
    st.session_state.setdefault(CELL_KEY, "FN")

    matrix_column, selector_column = st.columns([3, 2])
    with selector_column:
        cell = st.radio(
            "Cell", CELLS, key=CELL_KEY, format_func=lambda name: f"{name} · {counts[name]} — {CELL_NAMES[name]}"
        )
        st.caption("Or click a cell of the matrix.")
    with matrix_column:
        st.plotly_chart(
            charts.confusion_figure(
                confusion, selected=cell, title=TRAINED_POOL if body_part == OVERALL else group_label(body_part)
            ),
            key=CHART_KEY,
            on_select="rerun",
            selection_mode="points",
            config={"displayModeBar": False},
        )
    return body_part, subset, cell


def show_listing(model: str, body_part: str, cell: str, in_cell: pd.DataFrame) -> None:
    """The studies of the cell, most confident call first, and the same list as CSV."""
    st.subheader(f"{cell}: {len(in_cell)} {'study' if len(in_cell) == 1 else 'studies'} — {CELL_NAMES[cell]}")
    st.caption(
        "Sorted by the model's confidence in its call (P(abnormal) when called abnormal, else 1 − it): "
        "in FP and FN, the most confidently wrong come first."
    )
    export = in_cell[EXPORT_COLUMNS]
    st.dataframe(export, hide_index=True, width="stretch", column_config=_LIST_COLUMNS, column_order=_LIST_ORDER)
    st.download_button(
        "Download this list (CSV)",
        data=export.to_csv(index=False).encode(),
        mime="text/csv",
        file_name=f"{model}_{body_part}_{cell}.csv",
        disabled=in_cell.empty,
        key="error_export",
    )


def show_views(in_cell: pd.DataFrame, thresholds: Mapping[str, float]) -> None:
    """The top studies' views with Grad-CAM, on request and only with a MURA root."""
    st.subheader("Views and CAMs")
    mura_root = state.current_mura_root()
    if in_cell.empty:
        st.info("No study falls in this cell at these thresholds.")
        return
    if mura_root is None:
        st.info(
            "The images need a MURA root: set the MURA folder in the sidebar (or MURA_ROOT). "
            "The list and the CSV above work without it."
        )
        return
    shown = (
        st.slider(
            "Studies to show (from the top of the list)",
            1,
            min(10, len(in_cell)),
            min(3, len(in_cell)),
            key="error_shown",
        )
        if len(in_cell) > 1
        else 1
    )
    if not st.toggle(
        f"Compute Grad-CAM for the top {shown} {'study' if shown == 1 else 'studies'}",
        key="error_show_cams",
        help="Runs the model on these studies' views; a second or so each.",
    ):
        return
    loaded = state.current_model()
    for row in in_cell.head(shown).itertuples():
        st.markdown(
            f"**{row.study_path}** · label {'abnormal' if row.label else 'normal'} · "
            f"cached P(abnormal) {row.probability:.3f} at threshold {row.threshold:.3f}"
        )
        try:
            study = load_study(row.study_path, mura_root)
        except StudyLoadError as exc:
            st.warning(str(exc))
            continue
        views.show_study_views(loaded, study.views, study_type=study.study_type, thresholds=thresholds)
        if st.button("Open in Explain", key=f"error_open_{row.study_path}"):
            views.open_in_explain(row.study_path)


model = state.checked_model_name()
st.title("Error analysis")
card = state.read_card(model)
state.evaluation_or_stop(model)
evaluated = evaluation.level_evaluation(model, "study")
if evaluated is None:
    st.info(
        f"No cached evaluation for **{model}** yet. Run `make evaluate` "
        "(python -m core.evaluate --mura-root PATH --split valid) and reload."
    )
    st.stop()

st.caption(
    f"Studies of MURA valid/ as {model} called them in the cached evaluation (study = mean of its "
    "views' probabilities). Thresholds are shared with the Performance page."
)
thresholds = evaluation.threshold_controls(model, card, scope="error")
scored, out_of_scope = split_by_scope(evaluated.table, card)
body_part, subset, cell = choose_cell(scored, thresholds)
in_cell = evaluation.cell_studies(subset, thresholds, cell)
show_listing(model, body_part, cell, in_cell)
data_map.similar_picker(model, in_cell["study_path"], key="error")
show_views(in_cell, thresholds)
show_out_of_scope(out_of_scope, card)
