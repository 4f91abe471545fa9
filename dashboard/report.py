"""The one-click report on Overview and Model card: core.report's PDF of the sidebar's model, at the
thresholds last chosen on Performance or Error analysis (the card's if none was moved).

The PDF is made when the button is clicked (a deferred download), so pages that show the button
pay nothing for it; it reads the model folder's caches, as the command line does (and, for a model with
a fracture output, runs it on two shipped samples to draw their fracture maps: a few seconds).
"""

from __future__ import annotations

import datetime as dt

import streamlit as st

from core.eval.report import build_report
from core.store.artifacts import EvaluationMismatchError
from dashboard import evaluation, state

__all__ = ["report_button"]


def report_button(model: str, *, key: str) -> None:
    """A download button for the model's PDF report; one caption instead when its caches disagree."""
    try:
        state.cached_evaluation(model)
    except EvaluationMismatchError as exc:
        st.caption(f"The report is unavailable: {exc}")
        return
    thresholds = evaluation.chosen_thresholds(model, state.read_card(model))
    today = dt.datetime.now(dt.UTC).date()
    st.download_button(
        "Download a report (PDF)",
        data=lambda: build_report(model, thresholds=thresholds, date=today),
        file_name=f"{model}_report_{today.isoformat()}.pdf",
        mime="application/pdf",
        key=key,
        icon=":material/picture_as_pdf:",
        help="For people who will not open the app: the card's headline, per-body-part results with 95% CIs and "
        "a plain reading, confusion matrices at the thresholds chosen on Performance, the external and "
        "heat-map checks, limitations, data credits, and the model, code version and date. A model with a "
        "fracture output adds its FracAtlas test-part figures and the shipped samples' P(fracture) and "
        "fracture maps.",
    )
