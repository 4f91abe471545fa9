"""The quiz page (AppTest) on the shipped FracAtlas samples: one case answered right and one wrong,
the score follows, and the reveal draws the expert outline. The point is typed, the keyboard path
the click component shares (AppTest cannot click a custom component)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.data import fracatlas, fracture_split
from core.data.imaging import load_radiograph
from core.eval import quiz
from core.model.checkpoint import DEFAULT_MODEL, load_model
from core.model.prediction import predict_image_outputs
from dashboard import accuracy, quiz_view
from tests.app_pages import assert_clean, open_page
from tests.test_app_fracture import fracture_default  # noqa: F401 - the fixtures this file reuses
from tests.test_fracture_model import two_output  # noqa: F401

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _inside_point(case: quiz.QuizCase) -> tuple[int, int]:
    """A pixel of the case's expert outline."""
    root = accuracy.SAMPLES_ROOT.resolve()
    mask = fracatlas.read_outlines(root).mask(case.ref.removeprefix(accuracy.FRACATLAS_PREFIX))
    ys, xs = np.nonzero(mask)
    return int(xs[len(xs) // 2]), int(ys[len(ys) // 2])


def _answer(at: AppTest, abnormal: bool, point: tuple[int, int] | None) -> AppTest:
    at.radio(key=quiz_view.READING_KEY).set_value(abnormal)
    if point is not None:
        at.number_input(key=quiz_view.X_KEY).set_value(point[0])
        at.number_input(key=quiz_view.Y_KEY).set_value(point[1])
    at.run()
    assert_clean(at)
    assert not at.button(key=quiz_view.CHECK_KEY).disabled
    at.button(key=quiz_view.CHECK_KEY).click().run()
    assert_clean(at)
    return at


def _reader_row(at: AppTest, reader: str) -> pd.Series:
    (table,) = [d.value for d in at.dataframe if "Reader" in d.value.columns]
    assert table["Reader"].tolist() == ["Expert (reference)", "You", "Model"]
    return table.set_index("Reader").loc[reader]


def test_one_case_wrong_one_right(use_scratch_weights: Path) -> None:
    at = open_page("../pages/quiz.py")
    run: quiz_view.QuizRun = at.session_state[quiz_view.RUN_KEY]
    assert (run.source, run.difficulty, run.seed, len(run.cases)) == (
        quiz_view.FRACATLAS_SOURCE,
        quiz.EVERY_CASE,
        1,
        10,
    )
    assert _metric(at, "Your calls right") == "—"
    assert not at.dataframe and not at.success and not at.error  # nothing is revealed before the learner commits
    file_name = run.current.ref.rsplit("/", 1)[-1]  # the Explain samples pair file names with labels
    assert not any(file_name in c.value for c in at.caption)

    # Case 1, answered wrong: the opposite call (with a point far from any outline when it is "fracture").
    first = run.current
    at = _answer(at, not first.abnormal, None if first.abnormal else (0, 0))
    assert at.session_state[quiz_view.RUN_KEY].revealed
    assert _metric(at, "Your calls right") == "0/1 (0%)"
    assert any(e.value.startswith("Truth:") for e in at.error)
    assert _reader_row(at, "You")["Call right"] == "no"

    # Case 2, answered right: seed 1 puts a fracture here, pointed at inside its expert outline.
    at.button(key=quiz_view.NEXT_KEY).click().run()
    assert_clean(at)
    second = at.session_state[quiz_view.RUN_KEY].current
    assert second.ref != first.ref and not at.session_state[quiz_view.RUN_KEY].revealed
    assert second.abnormal and second.outlined, "seed 1 no longer puts an outlined fracture second"
    at = _answer(at, True, _inside_point(second))
    assert _metric(at, "Your calls right") == "1/2 (50%)"
    assert _metric(at, "You found the fracture") == "1/1 (100%)"
    assert any(s.value.startswith("Truth:") for s in at.success)
    you = _reader_row(at, "You")
    assert (you["Call right"], you["Pointed at the lesion"]) == ("yes", "yes")
    assert any("expert outline in cyan" in caption for image in at.get("image") for caption in image.captions)
    results = at.session_state[quiz_view.RUN_KEY].results
    # FracAtlas's label is fracture, the model's abnormal: shown for reference, never scored .
    assert _metric(at, "Model's calls right") == "not scored"
    assert _metric(at, "Model found the fracture") == "not scored"
    assert _reader_row(at, "Model")["Call"] == "not scored"
    assert any("**not scored**" in m.value for m in at.markdown)
    assert results[1].map_peak is not None and results[1].map_hit is not None  # the model's map was judged too


def test_a_mura_study_to_the_end_of_a_run(
    use_scratch_weights: Path, scratch_mura_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MURA_ROOT", str(scratch_mura_root))
    at = open_page("../pages/quiz.py")
    at.selectbox(key="quiz_source").set_value(quiz_view.MURA_SOURCE)
    at.number_input(key="quiz_length").set_value(1)
    at.run()
    at.button(key="quiz_start").click().run()
    assert_clean(at)
    run: quiz_view.QuizRun = at.session_state[quiz_view.RUN_KEY]
    (case,) = run.cases
    assert case.source == "MURA" and case.ref.startswith("MURA-v1.1/valid/") and case.probability is not None
    assert quiz_view.X_KEY not in [n.key for n in at.number_input]  # nothing to point at without an outline
    at = _answer(at, case.abnormal, None)  # MURA has no outline: the call alone is scored
    assert _metric(at, "Your calls right") == "1/1 (100%)" and _metric(at, "You found the fracture") == "—"
    assert _reader_row(at, "You")["Pointed at the lesion"] == "—"
    assert all("heat map" in image.captions[0] for image in at.get("image")[1::2])
    at.button(key=quiz_view.NEXT_KEY).click().run()
    assert_clean(at)
    assert any(s.value == "Done" for s in at.subheader)
    assert any("seed **1**" in m.value for m in at.markdown)


def test_a_fracture_model_is_quizzed_with_its_fracture_output_on_images_it_never_trained_on(
    fracture_default: Path,  # noqa: F811
) -> None:
    """Issue 28, items 3 and 5: the test model (fracture threshold 0.300) with a split that puts four of the
    samples in a training fold: none of them is asked, and the model's column is P(fracture) at 0.300 with
    the fracture map."""
    root = accuracy.SAMPLES_ROOT.resolve()
    images = fracatlas.read_images(root)
    upper = images[images["upper_limb"]]["file"].tolist()
    trained = set(upper[:4])
    split = images.assign(copy_group=images["file"], part=["fold0" if f in trained else "test" for f in images["file"]])
    split.to_csv(fracture_default / DEFAULT_MODEL / fracture_split.SPLIT_FILE, index=False, encoding="utf-8")

    at = open_page("../pages/quiz.py")
    run: quiz_view.QuizRun = at.session_state[quiz_view.RUN_KEY]
    assert len(run.cases) == len(upper) - 4
    assert all(c.output == "fracture" and c.threshold == 0.3 for c in run.cases)
    assert not {c.ref.removeprefix(accuracy.FRACATLAS_PREFIX) for c in run.cases} & trained
    assert any("fracture output (P(fracture), called fracture at or above 0.300)" in c.value for c in at.caption)

    case = run.current
    at = _answer(at, not case.abnormal, None if case.abnormal else (0, 0))
    file = case.ref.removeprefix(accuracy.FRACATLAS_PREFIX)
    pixels = load_radiograph(fracatlas.image_file(root, file)).pixels
    expected = float(predict_image_outputs(load_model(DEFAULT_MODEL, directory=fracture_default), [pixels])[0, 1])
    assert any(
        f"P(fracture) = {expected:.3f} against its fracture output's threshold 0.300" in m.value for m in at.markdown
    )
    assert _reader_row(at, "Model")["Call"] == ("Fracture" if expected >= 0.3 else "No fracture")
    right = (expected >= 0.3) == case.abnormal
    assert _metric(at, "Model's calls right") == ("1/1 (100%)" if right else "0/1 (0%)")
    assert any(
        "heat map (GradCAM · fracture map (128 ch, stride 16))" in caption
        for image in at.get("image")
        for caption in image.captions
    )


@pytest.mark.parametrize(
    "split, sentence",
    [
        (None, "split (fracatlas_split.csv) is missing, so the quiz cannot tell"),
        ("file,part\nimages/IMG0002313.jpg,test\n", "lacks the column(s) region, fractured, hardware, copy_group"),
    ],
)
def test_a_fracture_model_without_a_readable_split_asks_nothing(
    fracture_default: Path,  # noqa: F811
    split: str | None,
    sentence: str,
) -> None:
    """Which radiographs the fracture output trained on must be known before one is asked: one sentence."""
    if split is not None:
        (fracture_default / DEFAULT_MODEL / fracture_split.SPLIT_FILE).write_text(split, encoding="utf-8")
    at = open_page("../pages/quiz.py")
    assert quiz_view.RUN_KEY not in at.session_state  # no quiz started
    assert any(sentence in w.value for w in at.warning)
    assert at.button(key="quiz_start").disabled


@pytest.mark.parametrize(
    "value",
    [
        None,
        "click",
        [1, 2],
        {"x": 5, "y": 5},
        {"x": "5", "y": 5, "width": 10, "height": 10},
        {"x": float("nan"), "y": 5, "width": 10, "height": 10},
        {"x": 5, "y": float("inf"), "width": 10, "height": 10},
        {"x": 5, "y": 5, "width": 0, "height": 10},
        {"x": 5, "y": 5, "width": -10, "height": -10},
        {"x": 11, "y": 5, "width": 10, "height": 10},
        {"x": 5, "y": -1, "width": 10, "height": 10},
        {"x": True, "y": 5, "width": 10, "height": 10},
    ],
)
def test_a_crafted_click_is_ignored(value: object) -> None:
    """The click component's value comes from the browser; only a click inside the picture counts."""
    assert quiz_view.click_point(value, (200, 100)) is None


def test_a_click_is_scaled_from_displayed_to_image_pixels() -> None:
    assert quiz_view.click_point({"x": 5, "y": 2.5, "width": 10, "height": 10}, (200, 100)) == (50.0, 50.0)
