"""The load test (bench/load_test.py) in a small configuration: concurrent sessions, own answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import load_test
from core.models import DEFAULT_MODEL, load_model
from tests.browser import require_chromium
from tests.server import RunningDashboard

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

SESSIONS = 3


def test_chosen_uploads_cannot_be_confused(scratch_weights: Path) -> None:
    uploads = load_test.distinct_uploads(load_model(DEFAULT_MODEL, directory=scratch_weights), SESSIONS)
    assert len({upload.data for upload in uploads}) == SESSIONS
    expected = sorted(upload.expected for upload in uploads)
    assert min(b - a for a, b in zip(expected, expected[1:])) >= load_test.MIN_SEPARATION


def test_concurrent_sessions_each_get_their_own_answer(
    dashboard_server: RunningDashboard, scratch_weights: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_chromium()
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(scratch_weights))
    status = load_test.main(
        ["--url", dashboard_server.base_url, "--sessions", str(SESSIONS), "--timeout", "360"]
    )
    report = capsys.readouterr().out
    assert status == 0, report
    assert f"{SESSIONS} concurrent sessions" in report
    assert report.count(": ok") == SESSIONS
    assert "upload -> probability shown:  p50" in report
