"""The load test (bench/load_test.py) in a small configuration: concurrent sessions, own answers."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from bench import load_test
from core.model.checkpoint import DEFAULT_MODEL, load_model
from tests.browser import require_chromium
from tests.server import RunningDashboard

SESSIONS = 3


def test_chosen_uploads_cannot_be_confused(scratch_weights: Path) -> None:
    uploads = load_test.distinct_uploads(load_model(DEFAULT_MODEL, directory=scratch_weights), SESSIONS)
    assert len({upload.data for upload in uploads}) == SESSIONS
    expected = sorted(upload.expected for upload in uploads)
    assert min(b - a for a, b in pairwise(expected)) >= load_test.MIN_SEPARATION


@pytest.mark.slow  # a running server and browser sessions
@pytest.mark.browser
@pytest.mark.timeout(420)
def test_concurrent_sessions_each_get_their_own_answer(
    dashboard_server: RunningDashboard,
    scratch_weights: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_chromium()
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(scratch_weights))
    status = load_test.main(["--url", dashboard_server.base_url, "--sessions", str(SESSIONS), "--timeout", "360"])
    report = capsys.readouterr().out
    assert status == 0, report
    assert f"{SESSIONS} concurrent sessions" in report
    assert report.count(": ok") == SESSIONS
    assert "upload -> probability shown:  p50" in report


def test_a_session_showing_another_sessions_answer_is_wrong() -> None:
    mine = load_test.SessionUpload("a.png", b"a", expected=0.4123)
    other = load_test.SessionUpload("b.png", b"b", expected=0.4123 + load_test.MIN_SEPARATION)
    own = load_test.SessionResult(mine, "0.412", page_load_s=1.0, upload_s=1.0, error=None)
    swapped = load_test.SessionResult(mine, f"{other.expected:.3f}", page_load_s=1.0, upload_s=1.0, error=None)
    failed = load_test.SessionResult(mine, "0.412", page_load_s=1.0, upload_s=1.0, error="exception box")
    assert own.correct and not swapped.correct and not failed.correct
    report = load_test.LoadReport((own, swapped), wall_s=2.0)
    assert not report.all_correct and "WRONG" in report.summary()
