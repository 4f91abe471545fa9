"""dashboard.state's model cache: a server that sees checkpoints rewritten keeps a bounded number of
models in memory, not one per file version for the life of the process."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from dashboard import state


class FakeModel:
    """Stands in for a LoadedModel: only its lifetime matters here."""


@pytest.fixture()
def counted_loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeModel]]:
    loaded: list[FakeModel] = []

    def load(name, directory):
        loaded.append(FakeModel())
        return loaded[-1]

    monkeypatch.setattr(state, "load_model", load)
    state._get_model.clear()
    yield loaded
    state._get_model.clear()


def test_rewritten_checkpoints_do_not_pile_up_models(counted_loads: list[FakeModel]) -> None:
    first = weakref.ref(state._get_model("demo", "/weights", (1, 1)))
    counted_loads.clear()  # the cache, and the weak reference, are all that hold the first model now
    for version in range(2, 12):  # ten rewrites, more than any sensible cap
        state._get_model("demo", "/weights", (version, 1))
    gc.collect()
    assert first() is None, "the oldest model stays in memory"


def test_a_cached_model_is_loaded_once(counted_loads: list[FakeModel]) -> None:
    assert state._get_model("demo", "/weights", (1, 1)) is state._get_model("demo", "/weights", (1, 1))
    assert len(counted_loads) == 1
