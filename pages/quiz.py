"""Read it yourself: a quiz on real outlined radiographs. Look first (normal or abnormal, and where),
then compare with the truth, the expert outline and the model's verdict and heat map."""

from __future__ import annotations

import streamlit as st

from core.eval import quiz
from dashboard import quiz_view, state, studies

model = state.checked_model_name()
card = state.read_card(model) or {}
st.title("Read it yourself")
st.markdown(
    "Read each radiograph before anything is shown: call it, and for a fracture click where it is. "
    "Then compare with the expert's label and outline and with the model's verdict and heat map. "
    "Your score stays in this browser tab and is gone when you close it; nothing is stored."
)

sources = [quiz_view.FRACATLAS_SOURCE] + ([quiz_view.MURA_SOURCE] if state.current_mura_root() else [])
with st.expander("Quiz settings", expanded=quiz_view.current_run(model) is None):
    left, middle, right, far = st.columns(4)
    source = left.selectbox("Cases", sources, key="quiz_source")
    difficulty = middle.selectbox(
        "Difficulty", list(quiz.DIFFICULTIES), format_func=quiz.DIFFICULTIES.get, key="quiz_difficulty"
    )
    seed = right.number_input(
        "Seed",
        0,
        1_000_000,
        1,
        step=1,
        key="quiz_seed",
        help="Give a class one seed and every learner reads the same cases in the same order.",
    )
    length = far.number_input("Cases per quiz", 1, 50, quiz.DEFAULT_LENGTH, step=1, key="quiz_length")
    pool, reason = quiz_view.case_pool(model, card, source)
    start = st.button("Start a new quiz", key="quiz_start", disabled=not pool)
    if reason:
        st.warning(reason)

run = quiz_view.current_run(model)
if start or (run is None and pool):
    run = quiz_view.start_run(model, source, difficulty, int(seed), int(length), pool)
if run is None:
    st.stop()
if not run.cases:
    st.info("No case of this difficulty in these radiographs: choose another difficulty or source, then start.")
    st.stop()

quiz_view.show_score(run)
case = run.current
if case is None:
    quiz_view.show_finished(run)
    st.stop()
try:
    shown = quiz_view.load_case(case)
except studies.StudyLoadError as exc:
    st.error(str(exc))
    st.stop()
if run.revealed:
    quiz_view.show_reveal(run, shown)
else:
    quiz_view.show_question(run, shown)
