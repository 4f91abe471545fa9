"""Slow CAM methods (ScoreCAM, AblationCAM, FullGrad): an estimate before, progress and a cancel during.

A slow run takes minutes, so it runs in a background thread of its own, not in the script: a
Streamlit rerun (any widget touched, the opacity slider say) stops the script, and with it any
work the script was doing. The script only waits for the thread, redrawing a full-width progress
bar; a rerun stops the wait, not the run, and the next script run waits again. Cancel sets the
run's own ``threading.Event``, which core.cam.explain checks after every forward pass. Runs, their
events and their results live in this session's ``st.session_state``, so no session can see,
cancel or reuse another's (each pays for its own; the per-model lock in core.cam.explain lets at
most one slow run per model use the CPU at a time).

Two limits guard a shared server. A watcher thread cancels a run whose Streamlit session has been
gone (tab closed, browser quit) for longer than a reconnect grace: nobody can see its result, and
before, an AblationCAM ran on for minutes at full CPU. And each model takes at most
MAX_RUNS_PER_MODEL slow runs at a time, running or queued on its lock, from all sessions together:
one more is refused with one sentence, so tabs cannot stack hours of work.

Estimates are measured, never guessed: ScoreCAM and AblationCAM cost one forward pass per image
core.cam.explain.images_per_run counts, timed per image on this machine (core.cam.explain's
forward_seconds_per_image, replaced by the rate of the last finished run of that model); FullGrad
gets the duration of its last run on the model, and none before its first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import numpy as np
import streamlit as st
from streamlit import runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.cam.explain import CamCancelled, Explanation, explain, forward_seconds_per_image, images_per_run
from core.model.checkpoint import LoadedModel

__all__ = [
    "MAX_RUNS_PER_MODEL",
    "CamOptions",
    "SlowRun",
    "SlowRunsFull",
    "cancel",
    "estimate_text",
    "result",
    "run",
    "session_alive",
    "start",
]

RUNS_KEY = "slow_cam_runs"
_KEEP_RUNS = 8  # finished runs a session keeps (their maps are the only copy)
_POLL_S = 0.3
MAX_RUNS_PER_MODEL = 2  # one running on the model's slow lock, one waiting for it
# A session whose websocket drops is kept a while for a reconnect (Streamlit's session storage);
# a run survives a gap this long, then stops. The watcher looks every _WATCH_S seconds.
_GONE_GRACE_S = 20.0
_WATCH_S = 1.0

# Measured costs, shared by all sessions of this process: per (model, method, aug_smooth),
# seconds per forward image (counted methods) or per view (the others).
_MEASURED: dict[tuple[str, str, bool], float] = {}
_FORWARD: dict[str, float] = {}
_IMAGES: dict[tuple[str, str, tuple[str, ...], bool], int | None] = {}


@dataclass(eq=False)
class SlowRun:
    """One session's slow CAM over some views; the thread fills ``results`` (image key -> map)."""

    model: str
    label: str
    views: int
    estimate: str
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    progress: float = 0.0
    results: dict[str, Explanation] = field(default_factory=dict)
    error: str | None = None
    cancelled: bool = False
    session_id: str | None = None  # the Streamlit session that started it; None outside a server
    orphaned: bool = False  # cancelled by the watcher: its session was gone


class SlowRunsFull(RuntimeError):
    """A model already has MAX_RUNS_PER_MODEL slow runs running or queued on this server."""


# Every unfinished run of this process, per model, and the one watcher thread over them.
_ACTIVE: dict[str, list[SlowRun]] = {}
_ACTIVE_LOCK = threading.Lock()
_watcher: threading.Thread | None = None


def session_alive(session_id: str) -> bool:
    """Whether this Streamlit session still has a browser connected (Runtime.is_active_session, which
    Streamlit documents as safe from any thread). True where that cannot be told: no runtime (a bare
    script, AppTest) or a Streamlit without that call, since a run is never stopped on a guess."""
    if not runtime.exists():
        return True
    try:
        return bool(runtime.get_instance().is_active_session(session_id))
    except AttributeError:
        return True


def _current_session() -> str | None:
    ctx = get_script_run_ctx(suppress_warning=True)
    return ctx.session_id if ctx is not None else None


def _watch() -> None:
    """The watcher thread: cancel each run whose session has been gone longer than the grace;
    ends when no run is left (the next :func:`start` starts another)."""
    global _watcher
    gone_since: dict[SlowRun, float] = {}
    while True:
        with _ACTIVE_LOCK:
            watched = [r for runs in _ACTIVE.values() for r in runs if not r.done.is_set()]
            if not watched:
                _watcher = None
                return
        now = time.monotonic()
        gone_since = {r: since for r, since in gone_since.items() if r in watched}
        for r in watched:
            if r.session_id is None or r.cancel.is_set() or session_alive(r.session_id):
                gone_since.pop(r, None)
            elif now - gone_since.setdefault(r, now) >= _GONE_GRACE_S:
                r.orphaned = True
                r.cancel.set()
        time.sleep(_WATCH_S)


def _admit(run: SlowRun) -> None:
    """Count ``run`` against its model's cap (raising :class:`SlowRunsFull` when it is reached) and
    make sure the watcher is looking."""
    global _watcher
    with _ACTIVE_LOCK:
        for model in list(_ACTIVE):
            _ACTIVE[model] = [r for r in _ACTIVE[model] if not r.done.is_set()]
        others = _ACTIVE.setdefault(run.model, [])
        if len(others) >= MAX_RUNS_PER_MODEL:
            raise SlowRunsFull(
                f"This server is already running or queuing {len(others)} slow heat maps on this model, the most "
                "it takes at once; try again when one finishes, or pick a fast method."
            )
        others.append(run)
        if _watcher is None:
            _watcher = threading.Thread(target=_watch, name="slow-cam-watcher", daemon=True)
            _watcher.start()


def _runs() -> dict[str, SlowRun]:
    return st.session_state.setdefault(RUNS_KEY, {})


def _images(loaded: LoadedModel, model: str, method: str, layers: tuple[str, ...], aug_smooth: bool) -> int | None:
    key = (model, method, layers, aug_smooth)
    if key not in _IMAGES:
        _IMAGES[key] = images_per_run(loaded, method, list(layers) or None, aug_smooth=aug_smooth)
    return _IMAGES[key]


def _seconds_per_view(
    loaded: LoadedModel, model: str, method: str, layers: tuple[str, ...], aug_smooth: bool
) -> tuple[float | None, str]:
    """Expected seconds for one view, and how that number was obtained."""
    images = _images(loaded, model, method, layers, aug_smooth)
    measured = _MEASURED.get((model, method, aug_smooth))
    if images is None:
        if measured is None:
            return None, f"no estimate yet: this first {method} run on this model is timed for the next ones"
        return measured, f"the last {method} run on this model took {measured:.0f} s per view"
    if measured is None:
        if model not in _FORWARD:
            _FORWARD[model] = forward_seconds_per_image(loaded)
        rate, source = _FORWARD[model], "timed on this machine"
    else:
        rate, source = measured, f"the rate of the last {method} run on this model"
    return images * rate, f"{images} forward passes per view × {rate:.3f} s each, {source}"


def _duration(seconds: float) -> str:
    if seconds >= 2 * 3600:
        return f"about {seconds / 3600:.1f} h"
    return f"about {seconds / 60:.0f} min" if seconds >= 90 else f"about {max(1, round(seconds))} s"


def estimate_text(
    loaded: LoadedModel, model: str, method: str, layers: tuple[str, ...], aug_smooth: bool, views: int
) -> str:
    """ "about 6 min for 2 view(s) (97 forward passes per view × ...)": said before the user confirms."""
    seconds, how = _seconds_per_view(loaded, model, method, layers, aug_smooth)
    if seconds is None:
        return f"{views} view(s); {how}"
    return f"{_duration(seconds * views)} for {views} view(s) ({how})"


class CamOptions(TypedDict):
    """The choices that shape a slow run's maps (dashboard.views.CamSettings.map_key's), which
    :func:`start` and :func:`run` take as keywords."""

    method: str
    layers: tuple[str, ...]
    target: str
    aug_smooth: bool
    eigen_smooth: bool


def _work(
    run: SlowRun, loaded: LoadedModel, model: str, images: Sequence[tuple[str, np.ndarray]], cam: CamOptions
) -> None:
    """The thread: each view in turn; record the measured cost when all finished."""
    started = time.perf_counter()
    try:
        for index, (key, pixels) in enumerate(images):

            def report(fraction: float, index: int = index) -> None:
                run.progress = (index + fraction) / len(images)

            run.results[key] = explain(
                loaded,
                pixels,
                **(cam | {"layers": list(cam["layers"]) or None}),
                progress=report,
                cancel=run.cancel,
            )
    except CamCancelled:
        run.cancelled = True
    except (ValueError, RuntimeError) as exc:
        run.error = str(exc)
    else:
        per_view = (time.perf_counter() - started) / max(1, len(images))
        method, aug_smooth = cam["method"], cam["aug_smooth"]
        forward_images = _IMAGES.get((model, method, cam["layers"], aug_smooth))
        _MEASURED[(model, method, aug_smooth)] = per_view / forward_images if forward_images else per_view
    finally:
        run.done.set()


def cancel(run_key: str) -> None:
    """Cancel this session's run (a button's on_click): its thread stops after the forward pass in flight."""
    run = _runs().pop(run_key, None)
    if run is not None:
        run.cancel.set()


def result(model: str, image: str, key: tuple) -> Explanation | None:
    """This session's finished map of one view with these settings (an Explanation.key), if any run made it."""
    for finished in _runs().values():
        found = finished.results.get(image) if finished.done.is_set() and finished.model == model else None
        if found is not None and found.key == key:
            return found
    return None


def start(
    loaded: LoadedModel,
    model: str,
    run_key: str,
    images: Sequence[tuple[str, np.ndarray]],
    **cam: Unpack[CamOptions],
) -> SlowRun:
    """This session's run for ``run_key``: the one already started, else a new one on its own thread
    (a session back after the watcher stopped its run gets a new one). ``images`` are (image key, pixels).

    Raises:
        SlowRunsFull: the model has MAX_RUNS_PER_MODEL slow runs on this server already.
    """
    runs = _runs()
    current = runs.get(run_key)
    if current is not None and not current.orphaned:
        return current
    current = SlowRun(
        model,
        f"{cam['method']} → {cam['target']}",
        len(images),
        estimate_text(loaded, model, cam["method"], cam["layers"], cam["aug_smooth"], len(images)),
        session_id=_current_session(),
    )
    _admit(current)
    finished = [key for key, r in runs.items() if r.done.is_set()]
    for key in finished[: max(0, len(finished) - _KEEP_RUNS + 1)]:
        del runs[key]
    runs[run_key] = current
    threading.Thread(
        target=_work,
        name=f"slow-cam-{cam['method']}",
        daemon=True,
        args=(current, loaded, model, list(images), cam),
    ).start()
    return current


def run(
    loaded: LoadedModel,
    model: str,
    run_key: str,
    images: Sequence[tuple[str, np.ndarray]],
    *,
    button_key: str,
    on_cancel: Callable[[str], None] = cancel,
    **cam: Unpack[CamOptions],
) -> SlowRun:
    """:func:`start`, then wait for the run below a full-width progress bar with a cancel button
    (``on_cancel(run_key)``, which must call :func:`cancel`); returns the finished, failed or
    cancelled run. A run the server has no room for is refused in one sentence (an unstarted run with
    that ``error``), and ``on_cancel`` drops the user's confirmation so the Run button returns."""
    method = cam["method"]
    try:
        current = start(loaded, model, run_key, images, **cam)
    except SlowRunsFull as full:
        on_cancel(run_key)
        st.warning(str(full))
        refused = SlowRun(model, method, len(images), "", error=str(full))
        refused.done.set()
        return refused
    if not current.done.is_set():
        area = st.empty()
        with area.container(border=True):
            st.markdown(f"**Running {current.label}** on {current.views} view(s): {current.estimate}.")
            bar = st.progress(current.progress)
            st.button(
                f"Cancel {method}",
                key=button_key,
                on_click=on_cancel,
                args=(run_key,),
                help="Stops the run after the forward pass in progress; other sessions' runs go on.",
            )
            while not current.done.wait(_POLL_S):
                elapsed = time.monotonic() - current.started
                bar.progress(current.progress, text=f"{current.progress:.1%} · {elapsed:.0f} s so far")
        area.empty()
    if current.error:
        st.error(f"{method} could not be computed: {current.error}")
    return current
