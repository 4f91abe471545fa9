"""Shared AppTest helpers: start the dashboard's entry point and open one of its pages."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

#: AppTest resolves a relative path against the calling test file, so it gets an absolute one.
APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


def start_app() -> AppTest:
    """The dashboard after its first run (the default page, Overview)."""
    return AppTest.from_file(str(APP), default_timeout=120).run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def open_page(page: str) -> AppTest:
    """The dashboard switched to ``page`` (a path relative to dashboard/, e.g. "../pages/explain.py")."""
    at = start_app().switch_page(page).run()
    assert_clean(at)
    return at


def study_probability(at: AppTest) -> str:
    """Explain's study P(abnormal): a metric beside the verdict, or small type when there is no verdict."""
    if any(m.label == "Study P(abnormal)" for m in at.metric):
        return next(m.value for m in at.metric if m.label == "Study P(abnormal)")
    prefix = "Study P(abnormal) = "
    return next(c.value[len(prefix) :].split(",")[0] for c in at.caption if c.value.startswith(prefix))
