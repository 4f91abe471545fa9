"""dashboard.slow_runs: a session's Cancel stops its own slow run and never another session's."""

from __future__ import annotations

import dataclasses

import pytest

from dashboard import slow_runs
from tests.test_explain import STAGE_5, _radiograph_like, mobilenet  # noqa: F401  (fixture)

SAME_KEY = "same request in two sessions"


def test_cancel_stops_this_sessions_run_and_not_anothers(mobilenet, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    tiny = dataclasses.replace(mobilenet, input_size=64)
    stores: dict[str, dict[str, slow_runs.SlowRun]] = {"a": {}, "b": {}}
    session = "a"
    monkeypatch.setattr(slow_runs, "_runs", lambda: stores[session])  # st.session_state, one per session
    images = [("view", _radiograph_like(48, 40))]
    options = {"method": "ScoreCAM", "layers": (STAGE_5,), "target": "abnormal", "aug_smooth": False,
               "eigen_smooth": False}
    a_run = slow_runs.start(tiny, "m", SAME_KEY, images, **options)
    session = "b"
    b_run = slow_runs.start(tiny, "m", SAME_KEY, images, **options)
    assert a_run is not b_run
    session = "a"
    slow_runs.cancel(SAME_KEY)
    assert a_run.done.wait(60) and a_run.cancelled and not a_run.results
    assert SAME_KEY not in stores["a"]
    assert b_run.done.wait(120) and not b_run.cancelled and b_run.error is None
    session = "b"
    assert slow_runs.result("m", "view", b_run.results["view"].key) is b_run.results["view"]
