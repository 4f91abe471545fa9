"""Two sessions on one server: while session A's ScoreCAM runs, session B's GradCAM on a new upload
appears within seconds (before: B waited for A's whole run behind one lock per model)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.cam.explain import explain
from core.model.checkpoint import DEFAULT_MODEL
from dashboard import state
from tests.app_pages import assert_clean, study_probability
from tests.synthetic import HeldRun, synthetic_radiograph, synthetic_radiograph_png
from tests.test_app_explain import open_explain

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

# B's whole page run (upload, prediction, GradCAM at 96 px) takes seconds; A is held for longer.
B_LATENCY_LIMIT_S = 60.0


def test_a_fast_cam_in_one_session_does_not_wait_for_a_slow_cam_in_another(use_scratch_weights: Path) -> None:
    shared = state.get_model(DEFAULT_MODEL)  # the object every session of this process shares
    # Hold A's ScoreCAM at its first batch until B is done, then stop it as its Stop button would.
    held = HeldRun(timeout_s=B_LATENCY_LIMIT_S + 30)

    with ThreadPoolExecutor(max_workers=1) as session_a:
        slow = session_a.submit(explain, shared, synthetic_radiograph(3), method="ScoreCAM", progress=held)
        try:
            assert held.running.wait(timeout=60), "ScoreCAM never started"
            at = open_explain()
            assert state.get_model(DEFAULT_MODEL) is shared
            started = time.perf_counter()
            at.file_uploader(key="explain_upload").set_value(("b.png", synthetic_radiograph_png(4), "image/png")).run(
                timeout=B_LATENCY_LIMIT_S
            )
            latency = time.perf_counter() - started
            a_still_running = not slow.done()
        finally:
            held.released.set()
        assert_clean(at)
        assert study_probability(at)
        assert any("GradCAM" in caption for image in at.image for caption in image.captions)
        assert a_still_running and latency < B_LATENCY_LIMIT_S
        with pytest.raises(HeldRun.Stopped):
            slow.result()
