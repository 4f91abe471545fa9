"""Issue 27, items 1 and 3: a verdict on views the scope head flags says it is given against the flag,
and a flagged view leaves the study's mean (the page says so).

The scratch model has no scope head, so each test stands one in: dashboard.scope_view.cached_scopes
returns the assessments the test chooses, in upload order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.imaging import load_radiograph
from core.models import DEFAULT_MODEL, load_model
from core.predict import predict_images
from core.scope import ScopeAssessment
from dashboard import scope_view
from tests.app_pages import assert_clean, start_app, study_probability

SAMPLES = Path(__file__).resolve().parent.parent / "data_samples" / "synthetic"
VIEWS = [SAMPLES / "humerus_fracture" / "view1.png", SAMPLES / "humerus_fracture" / "view2.png"]
HUMERUS = ScopeAssessment({"humerus": 0.9, "forearm": 0.05, "hand/wrist": 0.03, "shoulder": 0.01, "other": 0.01},
                          1.0, 5.0)
HAND = ScopeAssessment({"humerus": 0.02, "forearm": 0.03, "hand/wrist": 0.93, "shoulder": 0.01, "other": 0.01},
                       1.0, 5.0)


def stand_in_head(monkeypatch: pytest.MonkeyPatch, scopes: list[ScopeAssessment]) -> None:
    monkeypatch.setattr(scope_view, "cached_scopes", lambda _loaded, images, _colour=(): scopes[:len(images)])


def upload(paths: list[Path]) -> AppTest:
    at = start_app().switch_page("../pages/explain.py").run()
    files = [(path.name, path.read_bytes(), "image/png") for path in paths]
    return at.file_uploader(key="explain_upload").set_value(files).run()


def probabilities(weights: Path, paths: list[Path]) -> np.ndarray:
    loaded = load_model(DEFAULT_MODEL, directory=weights)
    return predict_images(loaded, [load_radiograph(p.read_bytes()).pixels for p in paths])


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_a_verdict_on_a_flagged_view_is_marked_as_given_against_the_flag(use_scratch_weights: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_a_verdict_on_views_in_scope_carries_no_override_mark(use_scratch_weights: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_head(monkeypatch, [HUMERUS])
    at = upload(VIEWS[:1])
    at.selectbox(key="explain_body_part_upload").set_value("XR_HUMERUS").run()
    assert_clean(at)
    assert "Verdict" in metrics(at) and "Scope flag" not in metrics(at)
    assert not any("against the scope flag" in e.value for e in at.error)


def test_a_flagged_view_leaves_the_study_mean_and_the_page_says_so(use_scratch_weights: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_a_study_whose_views_are_all_flagged_gets_no_verdict(use_scratch_weights: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_head(monkeypatch, [HAND, HAND])
    at = upload(VIEWS)
    assert_clean(at)
    assert "Verdict" not in metrics(at)
    assert any(w.value.startswith("No verdict") for w in at.warning)
