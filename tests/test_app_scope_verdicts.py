"""Issue 27, items 1 and 3: a verdict on views the scope head flags says it is given against the flag,
and a flagged view leaves the study's mean (the page says so).

The scratch model has no scope head, so each test stands one in: dashboard.scope_view.cached_scopes
returns the assessments the test chooses, in upload order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.data.imaging import load_radiograph
from core.model.checkpoint import DEFAULT_MODEL, load_model
from core.model.prediction import predict_images
from core.scoping.head import ScopeAssessment
from dashboard import scope_view
from tests.app_pages import assert_clean, start_app, study_probability

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

SAMPLES = Path(__file__).resolve().parent.parent / "data_samples" / "synthetic"
VIEWS = [SAMPLES / "humerus_fracture" / "view1.png", SAMPLES / "humerus_fracture" / "view2.png"]
HUMERUS = ScopeAssessment(
    {"humerus": 0.9, "forearm": 0.05, "hand/wrist": 0.03, "shoulder": 0.01, "other": 0.01}, 1.0, 5.0
)
HAND = ScopeAssessment(
    {"humerus": 0.02, "forearm": 0.03, "hand/wrist": 0.93, "shoulder": 0.01, "other": 0.01}, 1.0, 5.0
)

#: A MURA valid/ wrist view as the shipped head saw it: an unflagged forearm call with a joint end in doubt.
WRIST = ScopeAssessment(
    {"humerus": 0.001, "forearm": 0.783, "hand/wrist": 0.007, "shoulder": 0.0, "joint close-up": 0.157, "other": 0.051},
    1.0,
    5.0,
)


def stand_in_head(monkeypatch: pytest.MonkeyPatch, scopes: list[ScopeAssessment]) -> None:
    monkeypatch.setattr(scope_view, "cached_scopes", lambda _loaded, images, _colour=(): scopes[: len(images)])


def upload(paths: list[Path]) -> AppTest:
    at = start_app().switch_page("../pages/explain.py").run()
    files = [(path.name, path.read_bytes(), "image/png") for path in paths]
    return at.file_uploader(key="explain_upload").set_value(files).run()


def probabilities(weights: Path, paths: list[Path]) -> np.ndarray:
    loaded = load_model(DEFAULT_MODEL, directory=weights)
    return predict_images(loaded, [load_radiograph(p.read_bytes()).pixels for p in paths])


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_a_verdict_on_a_flagged_view_is_marked_as_given_against_the_flag(
    use_scratch_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_head(monkeypatch, [HAND])
    at = upload(VIEWS[:1])
    assert_clean(at)
    assert "Verdict" not in metrics(at)  # flagged: no verdict until the user names the body part
    at.selectbox(key="explain_body_part_upload").set_value("XR_FOREARM").run()
    assert_clean(at)
    shown = metrics(at)
    assert shown["Verdict"] in ("normal", "abnormal")
    assert shown["Scope flag"] == "overridden"  # a metric beside the verdict, in the same type
    assert any("against the scope flag" in e.value for e in at.error)


def test_a_verdict_on_views_in_scope_carries_no_override_mark(
    use_scratch_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_head(monkeypatch, [HUMERUS])
    at = upload(VIEWS[:1])
    at.selectbox(key="explain_body_part_upload").set_value("XR_HUMERUS").run()
    assert_clean(at)
    assert "Verdict" in metrics(at) and "Scope flag" not in metrics(at)
    assert not any("against the scope flag" in e.value for e in at.error)


def test_a_flagged_view_leaves_the_study_mean_and_the_page_says_so(
    use_scratch_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_head(monkeypatch, [HUMERUS, HAND])
    at = upload(VIEWS)
    assert_clean(at)
    expected = probabilities(use_scratch_weights, VIEWS)
    assert study_probability(at) == f"{expected[0]:.3f}"  # the hand view is not in the mean
    assert any("Left out of the study's mean" in w.value and VIEWS[1].name in w.value for w in at.warning)
    captions = [c for image in at.image for c in image.captions]
    assert any(c.startswith(VIEWS[1].name) and "left out of the study's mean" in c for c in captions)
    at.selectbox(key="explain_body_part_upload").set_value("XR_HUMERUS").run()
    assert metrics(at)["Study P(abnormal)"] == f"{expected[0]:.3f}"
    assert "Scope flag" not in metrics(at)  # the verdict rests on the view in scope only


def test_a_study_whose_views_are_all_flagged_gets_no_verdict(
    use_scratch_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_head(monkeypatch, [HAND, HAND])
    at = upload(VIEWS)
    assert_clean(at)
    assert "Verdict" not in metrics(at)
    assert any(w.value.startswith("No verdict") for w in at.warning)


def test_a_sure_suggestion_not_preselected_says_why_visibly_and_can_be_taken(
    use_scratch_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27, item 10: the head is sure, its preselect flag (issue 14's rule) is off: an info box says so,
    with no internal file path, and one click takes the suggestion."""
    stand_in_head(monkeypatch, [HUMERUS])
    monkeypatch.setattr(scope_view, "preselects", lambda _loaded: False)
    at = upload(VIEWS[:1])
    assert_clean(at)
    (box,) = [i.value for i in at.info if i.value.startswith("Suggested body part")]
    assert "Not pre-selected" in box and "weights/" not in box and ".json" not in box
    assert not any("weights/" in c.value for c in at.caption)
    at.button(key="explain_use_suggestion_upload").click().run()
    assert_clean(at)
    assert at.selectbox(key="explain_body_part_upload").value == "XR_HUMERUS"
    assert "Verdict" in metrics(at)


def test_a_wrist_called_forearm_is_neither_suggested_nor_judged_until_named(
    use_scratch_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27, item 2: a forearm call that may be a wrist says so visibly, offers no suggestion and gets no
    verdict until the user names the body part, even where the head may pre-select."""
    stand_in_head(monkeypatch, [WRIST])
    monkeypatch.setattr(scope_view, "preselects", lambda _loaded: True)
    at = upload(VIEWS[:1])
    assert_clean(at)
    assert any("forearm or wrist: the scope head cannot tell these apart" in w.value.lower() for w in at.warning)
    assert not any(i.value.startswith("Suggested body part") for i in at.info)
    assert at.selectbox(key="explain_body_part_upload").value != "XR_FOREARM"
    assert "Verdict" not in metrics(at)
    at.selectbox(key="explain_body_part_upload").set_value("XR_FOREARM").run()
    assert_clean(at)
    assert "Verdict" in metrics(at) and "Scope flag" not in metrics(at)


def test_the_study_list_says_where_the_mura_studies_are(use_scratch_weights: Path, scratch_mura_root: Path) -> None:
    from tests.test_app_browse_overview import set_mura_root

    at = start_app().switch_page("../pages/explain.py").run()
    at.radio(key="explain_source").set_value("Sample or MURA study").run()
    assert "set your MURA folder in the sidebar" in at.selectbox(key="explain_study_choice").label
    at = set_mura_root(at, scratch_mura_root).run()
    box = at.selectbox(key="explain_study_choice")
    counts = re.match(r"Study: (\d+) samples, then the (\d+) MURA studies of your folder", box.label)
    assert counts and int(counts[2]) > 0 and int(counts[1]) + int(counts[2]) == len(box.options)
