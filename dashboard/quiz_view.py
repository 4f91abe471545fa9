"""The quiz page's pieces: the case pool, one session's run, the question and the reveal.

A run (:class:`QuizRun`) lives in ``st.session_state`` only: the seeded sequence of cases, where the
learner is, and their results; nothing is written anywhere, and nothing names the learner.

The learner points at the lesion by clicking the radiograph (the ``streamlit-image-coordinates``
component) or, from the keyboard, by typing the point's x and y. Both end in :func:`set_point`, the
one place a point is stored, so tests drive the same code through the number inputs (AppTest cannot
click a custom component).

The model's side reads caches first: the cached P(abnormal) of the case (core.evaluate's FracAtlas or
MURA predictions) and, for its heat map, the map that localised fractures best in the cached sweep
(core.localize), computed for the shown image with core.cam.explain through the cached helpers of
dashboard.views. Without a sweep it is the app's default GradCAM; without a cached probability the
model is run once for the case (cached). A model with a fracture output is read on FracAtlas with that
output (P(fracture) at its own threshold, GradCAM of the fracture map), on radiographs it never trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pandas as pd
import streamlit as st
from streamlit_image_coordinates import streamlit_image_coordinates

from core.cam.explain import DEFAULT_METHOD, METHODS
from core.cam.overlay import overlay
from core.data import fracatlas, fracture_split
from core.eval import metrics, quiz, trust
from core.eval.evaluation import FRACATLAS, REGION_LABELS, region_thresholds
from core.eval.localization import TOLERANCE_PX
from core.eval.localization_sweep import default_target
from core.model.card import card_thresholds, model_outputs, trained_study_types
from core.model.checkpoint import LoadedModel
from core.model.registry import ABNORMAL, FRACTURE
from core.store.artifacts import CachePairError, EvaluationMismatchError, ModelArtifacts, file_version
from dashboard import accuracy, fracture_view, state, studies, trust_view, views
from dashboard.charts import group_label

__all__ = [
    "RUN_KEY",
    "READING_KEY",
    "X_KEY",
    "Y_KEY",
    "CHECK_KEY",
    "NEXT_KEY",
    "FRACATLAS_SOURCE",
    "MURA_SOURCE",
    "QuizRun",
    "CaseView",
    "quiz_map",
    "case_pool",
    "load_case",
    "current_run",
    "start_run",
    "set_point",
    "click_point",
    "show_score",
    "show_question",
    "agreement_table",
    "show_reveal",
    "show_finished",
]

RUN_KEY = "quiz_run"
READING_KEY = "quiz_reading"
X_KEY, Y_KEY = "quiz_point_x", "quiz_point_y"
CHECK_KEY, NEXT_KEY = "quiz_check", "quiz_next"
_POINT_KEY = "quiz_point"
_CLICK_KEY = "quiz_click"
FRACATLAS_SOURCE = "FracAtlas radiographs"
MURA_SOURCE = "MURA valid/ studies"
_READINGS = {False: "Normal", True: "Abnormal"}
_FRACATLAS_READINGS = {False: "No fracture", True: "Fracture"}
_LEARNER_COLOUR = (0, 255, 0)  # green cross: the learner's point
_PEAK_COLOUR = (255, 0, 255)  # magenta diamond: the map's peak


@dataclass
class QuizRun:
    """One session's quiz: its model and settings, the seeded cases, the position and the results so far.

    The cases carry the model's cached probabilities, so a run belongs to the model it was started with.
    """

    model: str
    source: str
    difficulty: str
    seed: int
    cases: list[quiz.QuizCase]
    position: int = 0
    results: list[quiz.CaseResult] = field(default_factory=list)

    @property
    def current(self) -> quiz.QuizCase | None:
        """The case being read, or None after the last one."""
        return self.cases[self.position] if self.position < len(self.cases) else None

    @property
    def revealed(self) -> bool:
        """Whether the current case has been answered (its reveal is showing)."""
        return len(self.results) > self.position


@dataclass(frozen=True)
class CaseView:
    """A case ready to show: its views (name, pixels) and, for an outlined FracAtlas image, the outline."""

    case: quiz.QuizCase
    views: list[tuple[str, np.ndarray]]
    mask: np.ndarray | None


def _reading_words(case: quiz.QuizCase) -> dict[bool, str]:
    """FracAtlas's label is fracture, MURA's abnormal: the question uses the label's own words."""
    return _FRACATLAS_READINGS if case.source == "FracAtlas" else _READINGS


def _body_part(case: quiz.QuizCase) -> str:
    return REGION_LABELS.get(case.body_part, group_label(case.body_part))


def quiz_map(model: str, loaded: LoadedModel, output: str = ABNORMAL) -> tuple[str, str | None]:
    """(method, layer) of the model's map of ``output``.

    The fracture output: GradCAM on its default layer, the map it was trained to make. P(abnormal): the
    cached sweep's best fast map by hit rate among those that pass the sanity checks, else GradCAM on the
    default layer; the quiz shows the model at its best at pointing with a map that reads the model, not at
    its most common. A sweep of another output (core.localize explains P(fracture) where there is one) does
    not rank P(abnormal)'s maps, so it is not used for them.
    """
    if output != ABNORMAL or default_target(loaded.outputs) != ABNORMAL:
        return DEFAULT_METHOD, loaded.config.cam_layer_for(output)
    try:
        sweep = accuracy.cached_sweep(model)
    except CachePairError:
        sweep = None
    if sweep is not None:
        try:
            checked = trust_view.cached_trust(model, ABNORMAL)
        except CachePairError:
            checked = None
        table = accuracy.ranking(sweep.summary, "hit", sanity=trust.sanity_by_map(checked and checked.summary))
        usable = table[
            ~table["chance"]
            & table["method"].map(lambda m: m in METHODS and not METHODS[m].slow)
            & table["layer"].isin(list(loaded.cam_layers))
            & (table["sanity"] == "passes")
        ]
        if not usable.empty:
            return str(usable["method"].iloc[0]), str(usable["layer"].iloc[0])
    return DEFAULT_METHOD, loaded.config.default_cam_layer


@st.cache_data(show_spinner=False, max_entries=4)
def _outline_shares(root: str, version: int) -> dict[str, float]:
    outlines = fracatlas.read_outlines(Path(root))
    return {file: quiz.outline_share(outlines.mask(file)) for file in outlines.files()}


@st.cache_data(show_spinner=False, max_entries=4)
def _fracatlas_images(root: str, version: int) -> pd.DataFrame:
    return fracatlas.read_images(Path(root))


def _cached_predictions(model: str, dataset: str) -> pd.DataFrame | None:
    """The cached predictions, or None (with a caption) when the pair cannot be trusted."""
    try:
        return state.read_predictions(model, dataset)
    except EvaluationMismatchError as exc:
        st.caption(f"Cached probabilities unavailable ({exc}); the model is run on each case instead.")
        return None


def _trained(model: str, card: dict) -> tuple[frozenset[str] | None, str | None]:
    """(the FracAtlas files the model's fracture output trained on, None) for a model with that output;
    (None, None) for one without; (None, one-sentence reason) when its split cannot tell them apart."""
    if FRACTURE not in model_outputs(card):
        return None, None
    try:
        trained = fracture_view.trained_files(ModelArtifacts.of(model).directory)
    except fracture_split.SplitError as exc:
        return None, str(exc)
    if trained is None:
        return None, (
            f"The model's FracAtlas split ({fracture_split.SPLIT_FILE}) is missing, so the quiz cannot tell the "
            "radiographs its fracture output trained on from those it never saw."
        )
    return trained, None


def _fracatlas_pool(model: str, card: dict) -> tuple[list[quiz.QuizCase], str | None]:
    root, reason = accuracy.fracatlas_root()
    if root is None:
        return [], reason or "No FracAtlas radiographs are available."
    trained, reason = _trained(model, card)
    if reason:
        return [], reason
    try:
        images = _fracatlas_images(str(root), file_version(root / fracatlas.LABELS_FILE))
        shares = _outline_shares(str(root), file_version(root / fracatlas.COCO_FILE))
    except fracatlas.FracAtlasError as exc:
        return [], str(exc)
    cases = quiz.fracatlas_cases(
        images, shares, region_thresholds(card), _cached_predictions(model, FRACATLAS), card=card, trained=trained
    )
    if not cases and trained:
        return [], "The model's fracture output was trained on every upper-limb radiograph in this FracAtlas folder."
    return cases, None


def _mura_pool(model: str, card: dict) -> tuple[list[quiz.QuizCase], str | None]:
    root = state.current_mura_root()
    if root is None:
        return [], "Set a MURA v1.1 folder in the sidebar to read MURA studies."
    present = state.read_mura_images(root, "valid")
    trained = trained_study_types(card)
    predictions = _cached_predictions(model, "valid")
    if predictions is not None:
        table = metrics.study_table(predictions)
        table = table[table["study_path"].isin(set(present["study_path"]))]
    else:
        table = present.drop_duplicates("study_path")[["study_path", "study_type", "label"]]
    table = table[table["study_type"].isin(trained)]
    if table.empty:
        return [], "The MURA folder holds no valid/ study of the body parts the model was trained on."
    return quiz.mura_cases(table, card_thresholds(card), card=card), None


def case_pool(model: str, card: dict, source: str) -> tuple[list[quiz.QuizCase], str | None]:
    """Every case of ``source`` (FRACATLAS_SOURCE or MURA_SOURCE), or ([], one-sentence reason)."""
    if source == MURA_SOURCE:
        return _mura_pool(model, card)
    return _fracatlas_pool(model, card)


def load_case(case: quiz.QuizCase) -> CaseView:
    """The case's views and outline.

    Raises:
        studies.StudyLoadError: an image cannot be read (one sentence).
    """
    if case.source == "MURA":
        root = state.current_mura_root()
        if root is None:
            raise studies.StudyLoadError("The MURA folder is no longer set; start a quiz on FracAtlas instead.")
        return CaseView(case, studies.mura_study_views(root, case.ref), None)
    root, reason = accuracy.fracatlas_root()
    file = case.ref.removeprefix(accuracy.FRACATLAS_PREFIX)
    pixels = None if root is None else accuracy.image_pixels(root, file)
    if pixels is None:
        raise studies.StudyLoadError(reason or f"The FracAtlas radiograph {file} cannot be read.")
    mask = accuracy.expert_outline(case.ref, root) if case.outlined else None
    if mask is not None and mask.shape != pixels.shape:
        mask = None
    return CaseView(case, [(PurePosixPath(file).name, pixels)], mask)


def current_run(model: str) -> QuizRun | None:
    """This session's quiz of ``model``, if one was started (a run of another model is not continued)."""
    run = st.session_state.get(RUN_KEY)
    return run if run is not None and run.model == model else None


def _clear_answer() -> None:
    for key in (READING_KEY, X_KEY, Y_KEY, _POINT_KEY):
        st.session_state.pop(key, None)


def start_run(model: str, source: str, difficulty: str, seed: int, length: int, pool: list[quiz.QuizCase]) -> QuizRun:
    """A new run of up to ``length`` cases in the seeded order; the previous run and answer are dropped."""
    run = QuizRun(
        model,
        source,
        difficulty,
        int(seed),
        quiz.sequence(pool, difficulty=difficulty, seed=int(seed), length=int(length)),
    )
    _clear_answer()
    st.session_state[RUN_KEY] = run
    return run


def set_point(x: float | None, y: float | None, shape: tuple[int, int]) -> None:
    """Store the learner's point (image pixels, clipped into the image); both inputs mirror it."""
    if x is None or y is None:
        st.session_state.pop(_POINT_KEY, None)
        return
    height, width = shape
    point = (int(min(max(round(x), 0), width - 1)), int(min(max(round(y), 0), height - 1)))
    st.session_state[_POINT_KEY] = point
    st.session_state[X_KEY], st.session_state[Y_KEY] = point


def click_point(value: object, shape: tuple[int, int]) -> tuple[float, float] | None:
    """The image pixel of the component's click (its value is in displayed pixels), or None when the
    value is not a click inside the picture: it comes from the browser, and a crafted one (text,
    NaN, infinity, a zero width) must be ignored, not stop the page."""
    if not isinstance(value, dict):
        return None
    numbers = [value.get(key) for key in ("x", "y", "width", "height")]
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) for n in numbers):
        return None
    x, y, shown_width, shown_height = numbers
    if shown_width <= 0 or shown_height <= 0 or not (0 <= x <= shown_width and 0 <= y <= shown_height):
        return None
    height, width = shape
    return x * width / shown_width, y * height / shown_height


def _on_click(shape: tuple[int, int]) -> None:
    point = click_point(st.session_state.get(_CLICK_KEY), shape)
    if point is not None:
        set_point(*point, shape)


def _on_typed(shape: tuple[int, int]) -> None:
    set_point(st.session_state.get(X_KEY), st.session_state.get(Y_KEY), shape)


def _rgb(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack([pixels] * 3, axis=-1)) if pixels.ndim == 2 else pixels.copy()


def _marker_size(shape: tuple[int, ...]) -> int:
    return max(12, round(max(shape[:2]) / 25))


def _mark(
    picture: np.ndarray, point: tuple[int, int] | None, colour: tuple[int, int, int], marker: int = cv2.MARKER_CROSS
) -> np.ndarray:
    if point is None:
        return picture
    picture = np.ascontiguousarray(picture)
    size = _marker_size(picture.shape)
    cv2.drawMarker(picture, point, (0, 0, 0), marker, size, max(4, size // 4))  # dark rim on bright bone
    cv2.drawMarker(picture, point, colour, marker, size, max(2, size // 8))
    return picture


def show_score(run: QuizRun) -> None:
    """The running score: right calls of the learner and the model, and fractures each pointed at."""
    totals = quiz.score(run.results)
    columns = st.columns(4)

    def share(part: int, whole: int) -> str:
        value = quiz.Score.share(part, whole)
        return "—" if value is None else f"{part}/{whole} ({value:.0%})"

    columns[0].metric("Your calls right", share(totals.learner_right, totals.cases))
    columns[1].metric(
        "Model's calls right",
        share(totals.model_right, totals.model_cases) if totals.model_cases or not totals.cases else "not scored",
        help="Only on cases of a body part and label the model was trained on; the others show its "
        "output for reference, not scored.",
    )
    columns[2].metric(
        "You found the fracture",
        share(totals.learner_found, totals.outlined),
        help=f"Called it and pointed within {TOLERANCE_PX} px of the expert outline.",
    )
    columns[3].metric(
        "Model found the fracture",
        share(totals.model_found, totals.model_outlined)
        if totals.model_outlined or not totals.outlined
        else "not scored",
        help=f"Called it, and its heat map's peak lies within {TOLERANCE_PX} px of the outline "
        "(the pointing game of the Heat-map accuracy page).",
    )
    st.caption(quiz.compared(run.cases))


def _context(run: QuizRun, case: quiz.QuizCase) -> str:
    return f"Case {run.position + 1} of {len(run.cases)} · {case.source} · {_body_part(case)}"


def show_question(run: QuizRun, view: CaseView) -> None:
    """The radiograph(s) with no answer, the learner's reading, their point and the check button."""
    case = view.case
    words = _reading_words(case)
    st.subheader(_context(run, case))
    can_point = case.source == "FracAtlas"
    point = st.session_state.get(_POINT_KEY)
    picture_column, answer_column = st.columns([3, 2])
    with picture_column:
        if can_point:
            name, pixels = view.views[0]
            streamlit_image_coordinates(
                _mark(_rgb(pixels), point, _LEARNER_COLOUR),
                key=_CLICK_KEY,
                width="stretch",
                cursor="crosshair",
                on_click=lambda: _on_click(pixels.shape),
            )
            st.caption(fracatlas.CREDIT)  # no file name before the reveal: the Explain samples pair names with labels
        else:
            grid = st.columns(min(3, len(view.views)))
            for index, (_name, pixels) in enumerate(view.views):
                grid[index % len(grid)].image(pixels, caption=f"View {index + 1}", width="stretch")
            st.caption("MURA has no expert outlines, so only your call is scored on a MURA study.")
    with answer_column:
        reading = st.radio(
            "Your reading", list(words), format_func=words.get, index=None, key=READING_KEY, horizontal=True
        )
        if can_point:
            st.caption(
                f'For "{words[True].lower()}", click where it is on the radiograph (a green cross marks '
                "your point), or type the point below."
            )
            height, width = view.views[0][1].shape
            x_column, y_column = st.columns(2)
            x_column.number_input(
                "x (pixels from the left)",
                0,
                width - 1,
                None,
                step=1,
                key=X_KEY,
                on_change=_on_typed,
                args=((height, width),),
            )
            y_column.number_input(
                "y (pixels from the top)",
                0,
                height - 1,
                None,
                step=1,
                key=Y_KEY,
                on_change=_on_typed,
                args=((height, width),),
            )
        missing_point = can_point and reading is True and point is None
        if missing_point:
            st.caption('Point at it first: a call of "fracture" is scored with where you saw it.')
        if st.button("Check my reading", type="primary", key=CHECK_KEY, disabled=reading is None or missing_point):
            _answer(run, view, bool(reading), point if can_point else None)
            st.rerun()


def _model_side(view: CaseView) -> tuple[float, list[np.ndarray | None], str, str | None]:
    """P(output) of the case's output (cached, else run once), each view's heat map of that output (None,
    after one st.error sentence, where it cannot be computed), and the map's method and layer."""
    loaded = state.current_model()
    model = state.current_model_name()
    pixels = [p for _, p in view.views]
    output = view.case.output
    probability = view.case.probability
    if probability is None:
        predict = fracture_view.cached_fractures if output == FRACTURE else views.cached_probabilities
        probability = float(np.mean(predict(loaded, pixels)))
    method, layer = quiz_map(model, loaded, output)
    settings = views.CamSettings(method=method, layers=(layer,) if layer else (), target=output)
    explanations = [views.explanation_or_error(loaded, p, name, settings) for name, p in view.views]
    return probability, [None if e is None else e.heatmap for e in explanations], method, layer


def _answer(run: QuizRun, view: CaseView, learner_abnormal: bool, point: tuple[int, int] | None) -> None:
    probability, maps, _method, _layer = _model_side(view)
    result = quiz.judge(
        view.case,
        learner_abnormal=learner_abnormal,
        point=point,
        mask=view.mask,
        model_abnormal=view.case.model_call(probability),
        heatmap=maps[0] if view.mask is not None else None,
    )
    run.results.append(result)


def _next_case(run: QuizRun) -> None:
    run.position += 1
    _clear_answer()


def _yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def agreement_table(result: quiz.CaseResult, words: dict[bool, str]) -> pd.DataFrame:
    """Who called what, and who pointed within the tolerance of the expert outline."""
    rows = [
        {
            "Reader": "Expert (reference)",
            "Call": words[result.abnormal],
            "Pointed at the lesion": "outline drawn" if result.outlined else "—",
            "Call right": "—",
        },
        {
            "Reader": "You",
            "Call": words[result.learner_abnormal],
            "Pointed at the lesion": (
                _yes_no(result.learner_hit)
                + (f" ({result.learner_distance:.0f} px away)" if result.learner_distance else "")
            )
            if result.outlined
            else "—",
            "Call right": _yes_no(result.learner_right),
        },
        {
            "Reader": "Model",
            "Call": "not scored" if not result.model_scored else words[result.model_abnormal],
            "Pointed at the lesion": f"{_yes_no(result.map_hit)} (map's peak)" if result.outlined else "—",
            "Call right": _yes_no(result.model_right if result.model_scored else None),
        },
    ]
    return pd.DataFrame(rows)


def show_reveal(run: QuizRun, view: CaseView) -> None:
    """Truth, expert outline, the model's probability, verdict and map, with both points marked."""
    case, result = view.case, run.results[run.position]
    words = _reading_words(case)
    probability, maps, method, layer = _model_side(view)
    st.subheader(_context(run, case))
    verdict = "right" if result.learner_right else "wrong"
    (st.success if result.learner_right else st.error)(
        f"Truth: **{words[case.abnormal].lower()}**. Your call, {words[result.learner_abnormal].lower()}, is {verdict}."
    )
    for index, ((name, pixels), heatmap) in enumerate(zip(view.views, maps, strict=True)):
        plain, mapped = _rgb(pixels), _rgb(pixels) if heatmap is None else overlay(pixels, heatmap)
        if index == 0 and view.mask is not None:
            plain, mapped = accuracy.draw_outline(plain, view.mask), accuracy.draw_outline(mapped, view.mask)
        if index == 0:
            plain = _mark(plain, result.learner_point, _LEARNER_COLOUR)
            mapped = _mark(mapped, result.learner_point, _LEARNER_COLOUR)
            mapped = _mark(mapped, result.map_peak, _PEAK_COLOUR, cv2.MARKER_DIAMOND)
        left, right = st.columns(2)
        left.image(
            plain,
            caption=f"{name}: "
            + ("expert outline in cyan" if index == 0 and view.mask is not None else "the radiograph"),
            width="stretch",
        )
        map_name = method + (f" · {layer}" if layer else "")
        right.image(
            mapped,
            caption=f"{name}: "
            + (f"the model's heat map ({map_name})" if heatmap is not None else "no heat map (see the message above)"),
            width="stretch",
        )
    legend = "Green cross: your point. " if result.learner_point else ""
    if result.outlined:
        legend += f"Magenta diamond: the map's peak. A point counts within {TOLERANCE_PX} px of the outline."
    if legend:
        st.caption(legend)
    if case.threshold is None:
        st.markdown(
            f"**Model:** P({case.output}) = {probability:.3f}, shown for reference; **not scored**. {case.not_scored}"
        )
    elif case.output == FRACTURE:
        st.markdown(
            f"**Model:** P(fracture) = {probability:.3f} against its fracture output's threshold "
            f"{case.threshold:.3f}: **{words[probability >= case.threshold].lower()}**."
        )
    else:
        st.markdown(
            f"**Model:** P(abnormal) = {probability:.3f} against its threshold {case.threshold:.3f} for "
            f"{_body_part(case)}: **{words[probability >= case.threshold].lower()}**."
        )
    st.dataframe(agreement_table(result, words), hide_index=True, width="stretch")
    if case.output == FRACTURE:
        st.caption(
            "FracAtlas's label is *fracture*, and so is the model output shown: its fracture output, trained on "
            "FracAtlas's training folds and never on this radiograph (the quiz asks only images it did not "
            f"train on). {fracatlas.CREDIT}"
        )
    elif case.source == "FracAtlas":
        st.caption(
            "FracAtlas's label is *fracture*; the model was trained on MURA's broader *abnormal* "
            f"(hardware counts there). {fracatlas.CREDIT}"
        )
    st.button(
        "Next case" if run.position + 1 < len(run.cases) else "See my score",
        type="primary",
        key=NEXT_KEY,
        on_click=_next_case,
        args=(run,),
    )


def show_finished(run: QuizRun) -> None:
    """The end of a run: what the score means, and how to repeat it."""
    totals = quiz.score(run.results)
    st.subheader("Done")
    model = (
        f"the model {totals.model_right} of the {totals.model_cases} it is scored on"
        if totals.model_cases
        else "the model is not scored on these cases"
    )
    st.markdown(
        f"You read {totals.cases} case(s) and called {totals.learner_right} right; {model}. Another class "
        f"can read the same sequence with **{run.source}**, difficulty **{run.difficulty}** and seed "
        f"**{run.seed}**."
    )
