"""The start-up warm-up (issue 27): it fills the slow pages' own caches, starts once, and never reaches the UI."""

from __future__ import annotations

import pytest
import streamlit as st

from core.eval import trust as core_trust
from dashboard import data_map, state, trust_view, views, warmup
from tests.app_pages import assert_clean, open_page, start_app


class _Watched:
    """A module whose named functions are replaced; everything else is the module's."""

    def __init__(self, module: object, **replaced: object) -> None:
        self._module, self._replaced = module, replaced

    def __getattr__(self, name: str) -> object:
        return self._replaced.get(name) or getattr(self._module, name)


@pytest.fixture
def fresh_warmup(monkeypatch: pytest.MonkeyPatch):
    """Caches empty and no warm-up thread yet, as in a server that has just started."""
    st.cache_data.clear()
    st.cache_resource.clear()
    monkeypatch.setattr(warmup, "_thread", None)
    monkeypatch.setenv("MURA_LENS_WARMUP", "1")
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def test_after_the_warm_up_the_slow_pages_read_nothing_from_disk(fresh_warmup, monkeypatch: pytest.MonkeyPatch):
    """Heat-map accuracy and Data map, visited after warm_caches(), are served from the caches it filled:
    the readers under their cached loaders are never called again."""
    assert warmup.warm_caches() == []
    monkeypatch.setenv("MURA_LENS_WARMUP", "0")  # the pages' own runs start no second warm-up here
    missed: list[str] = []

    def miss(name: str):
        def reader(*_args, **_kwargs):
            missed.append(name)
            raise AssertionError(f"cache miss: {name}")

        return reader

    monkeypatch.setattr(data_map.embeddings, "load", miss("embeddings"))
    monkeypatch.setattr("dashboard.accuracy.read_cache", miss("localization sweep"))
    # Only the page's cached loader is watched (core.eval.trust.headline reads the file uncached, by design).
    monkeypatch.setattr(trust_view, "trust", _Watched(core_trust, read_cache=miss("sanity checks")))
    monkeypatch.setattr(views, "explain", miss("gallery CAM"))
    monkeypatch.setattr(state, "load_model", miss("model"))
    at = open_page("../pages/heatmap_accuracy.py")
    assert at.get("image"), "the gallery drew no picture to check"
    open_page("../pages/data_map.py")
    assert missed == []


def test_the_app_starts_the_warm_up_once_and_its_failures_stay_in_the_log(
    fresh_warmup, monkeypatch: pytest.MonkeyPatch
):
    calls: list[str] = []

    def broken(model: str) -> None:
        calls.append(model)
        raise OSError("disk gone")

    monkeypatch.setattr(warmup, "STEPS", (("Broken page", broken),))
    at = start_app()
    thread = warmup.start()
    assert thread is not None and thread.daemon
    thread.join(60)
    at.run()  # a rerun, and a second session, start no second warm-up
    start_app()
    assert warmup.start() is thread and calls == [warmup.DEFAULT_MODEL]
    assert_clean(at)
    assert warmup.warm_caches() == ["Broken page"]  # logged and reported, never raised


def test_turned_off_it_never_starts(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(warmup, "_thread", None)
    monkeypatch.setenv("MURA_LENS_WARMUP", "0")
    assert warmup.start() is None
