"""dashboard.slow_runs: a session's Cancel stops its own slow run and never another session's; a run
whose session is gone stops by itself; a model takes at most MAX_RUNS_PER_MODEL slow runs at once."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import pytest
from streamlit.runtime import Runtime

from core.cam.explain import explain
from dashboard import slow_runs
from tests.test_explain import STAGE_5, _radiograph_like, mobilenet  # noqa: F401  (fixture)

SAME_KEY = "same request in two sessions"
OPTIONS = {"method": "ScoreCAM", "layers": (STAGE_5,), "target": "abnormal", "aug_smooth": False, "eigen_smooth": False}
GRACE_S, WATCH_S = 0.3, 0.05
# Once its session is gone a run ends within the grace, one look of the watcher and one forward pass
# of 4 images at 64 px (or one lock poll, queued): well under this on a loaded 2-core machine.
STOP_BOUND_S = 5.0


@pytest.fixture(autouse=True)
def fresh_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """No other test's runs count against the cap here."""
    monkeypatch.setattr(slow_runs, "_ACTIVE", {})
    monkeypatch.setattr(slow_runs, "_watcher", None)


class Sessions:
    """Fake Streamlit sessions: which one the script runs in, its st.session_state store, and which
    are still connected (what Runtime.is_active_session would say)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.current = "a"
        self.stores: dict[str, dict[str, slow_runs.SlowRun]] = {}
        self.gone: set[str] = set()
        monkeypatch.setattr(slow_runs, "_runs", lambda: self.stores.setdefault(self.current, {}))
        monkeypatch.setattr(slow_runs, "_current_session", lambda: self.current)
        monkeypatch.setattr(slow_runs, "session_alive", lambda session: session not in self.gone)
        monkeypatch.setattr(slow_runs, "_GONE_GRACE_S", GRACE_S)
        monkeypatch.setattr(slow_runs, "_WATCH_S", WATCH_S)

    def start(self, session: str, loaded, key: str = SAME_KEY) -> slow_runs.SlowRun:
        self.current = session
        return slow_runs.start(loaded, "m", key, [("view", _radiograph_like(48, 40))], **OPTIONS)


def held_explain(*args: object, progress: Callable[[float], None], cancel: threading.Event, **kwargs: object) -> object:
    """core.cam.explain.explain whose run, once past its first batch, waits for its cancel event
    (at most 60 s) before the next forward pass: a slow run that lasts until something stops it."""

    def hold(fraction: float) -> None:
        progress(fraction)
        if 0.0 < fraction < 1.0:
            cancel.wait(60)

    return explain(*args, progress=hold, cancel=cancel, **kwargs)


def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_cancel_stops_this_sessions_run_and_not_anothers(mobilenet, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = dataclasses.replace(mobilenet, input_size=64)
    stores: dict[str, dict[str, slow_runs.SlowRun]] = {"a": {}, "b": {}}
    session = "a"
    monkeypatch.setattr(slow_runs, "_runs", lambda: stores[session])  # st.session_state, one per session
    images = [("view", _radiograph_like(48, 40))]
    options = {
        "method": "ScoreCAM",
        "layers": (STAGE_5,),
        "target": "abnormal",
        "aug_smooth": False,
        "eigen_smooth": False,
    }
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


def test_a_run_stops_once_its_session_is_gone_and_only_that_run(
    mobilenet,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tiny = dataclasses.replace(mobilenet, input_size=64)
    sessions = Sessions(monkeypatch)
    monkeypatch.setattr(slow_runs, "explain", held_explain)
    running = sessions.start("a", tiny)
    assert wait_until(lambda: running.progress > 0), "the run never started"
    queued = sessions.start("b", tiny)  # waits for the model's slow lock behind a's run

    time.sleep(GRACE_S * 3)  # both sessions still connected: nothing stops
    assert not running.done.is_set() and not queued.done.is_set()

    sessions.gone.add("b")  # b's tab closes while its run waits for the lock
    started = time.monotonic()
    assert queued.done.wait(STOP_BOUND_S), "a queued run of a closed tab kept waiting"
    assert queued.cancelled and queued.orphaned and time.monotonic() - started >= GRACE_S
    assert not running.done.is_set()

    sessions.gone.add("a")  # a's tab closes mid-run
    started = time.monotonic()
    assert running.done.wait(STOP_BOUND_S), "a running run of a closed tab kept running"
    assert running.cancelled and running.orphaned and not running.results
    assert time.monotonic() - started >= GRACE_S
    assert wait_until(lambda: slow_runs._watcher is None, STOP_BOUND_S), "the watcher outlived the runs"

    sessions.gone.clear()  # a reconnects and its page asks again: a new run, not the stopped one
    again = sessions.start("a", tiny)
    assert again is not running and not again.orphaned
    again.cancel.set()
    assert again.done.wait(STOP_BOUND_S)


def test_a_model_takes_two_slow_runs_and_refuses_a_third_in_one_sentence(
    mobilenet, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = dataclasses.replace(mobilenet, input_size=64)
    sessions = Sessions(monkeypatch)
    monkeypatch.setattr(slow_runs, "explain", held_explain)
    first, second = sessions.start("a", tiny), sessions.start("b", tiny)
    with pytest.raises(slow_runs.SlowRunsFull) as refused:
        sessions.start("c", tiny)
    message = str(refused.value)
    assert message.count(". ") == 0 and message.endswith(".") and "2 slow heat maps" in message
    assert SAME_KEY not in sessions.stores["c"]  # nothing started, nothing kept for c

    sessions.current = "a"
    slow_runs.cancel(SAME_KEY)  # a's Cancel frees a place for c
    assert first.done.wait(STOP_BOUND_S)
    third = sessions.start("c", tiny)
    assert not third.done.is_set()
    for run in (second, third):
        run.cancel.set()
        assert run.done.wait(STOP_BOUND_S) and run.cancelled


def test_run_shows_the_refusal_and_gives_the_run_button_back(
    mobilenet,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tiny = dataclasses.replace(mobilenet, input_size=64)
    sessions = Sessions(monkeypatch)
    monkeypatch.setattr(slow_runs, "explain", held_explain)
    held = [sessions.start("a", tiny), sessions.start("b", tiny)]
    warnings: list[str] = []
    monkeypatch.setattr(slow_runs.st, "warning", warnings.append)
    unconfirmed: list[str] = []
    sessions.current = "c"
    refused = slow_runs.run(
        tiny,
        "m",
        SAME_KEY,
        [("view", _radiograph_like(48, 40))],
        **OPTIONS,
        button_key="cancel",
        on_cancel=unconfirmed.append,
    )
    assert refused.done.is_set() and refused.error == warnings[0] and unconfirmed == [SAME_KEY]
    for run in held:
        run.cancel.set()
        assert run.done.wait(STOP_BOUND_S)


def test_session_alive_asks_the_streamlit_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    assert slow_runs.session_alive("any")  # no server runtime here: it cannot tell, so it never stops a run
    assert callable(Runtime.is_active_session)  # the call this Streamlit offers

    class Connected:
        @staticmethod
        def is_active_session(session_id: str) -> bool:
            return session_id == "open tab"

    monkeypatch.setattr(slow_runs.runtime, "exists", lambda: True)
    monkeypatch.setattr(slow_runs.runtime, "get_instance", Connected)
    assert slow_runs.session_alive("open tab") and not slow_runs.session_alive("closed tab")
