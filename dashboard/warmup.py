"""Warm the slowest pages' caches at start-up, in a background thread, so their first visit is a cache hit.

The first visit after a server start paid for reading and joining the cached evaluation files (about 11 s
on Heat-map accuracy and 10.5 s on Data map on two quiet cores, issue 27). The warm-up calls the very
functions those pages call (their st.cache_data / st.cache_resource loaders, with the same arguments, so
the same cache keys) for the default model, once per process, on a daemon thread: a visitor never waits
for it, and a page visited before it finishes computes as before. A failing step is logged, never raised:
the page that needs it shows its own sentence. ``MURA_LENS_WARMUP=0`` turns it off (tests, benchmarks).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from core.data import fracatlas
from core.model.checkpoint import DEFAULT_MODEL

#: Pictures on the first gallery page of Heat-map accuracy (pages/heatmap_accuracy.py's GALLERY_PAGE_SIZE).
GALLERY_PAGE_SIZE = 6

__all__ = ["STEPS", "enabled", "start", "warm_caches"]

LOG = logging.getLogger(__name__)
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _heatmap_accuracy(model: str) -> None:
    """The page's caches and its default gallery: the model, and the CAMs of the first GALLERY_PAGE_SIZE
    images of the best-ranked map (what the page draws before the user touches a control)."""
    from core.eval import trust
    from dashboard import accuracy, state, trust_view, views

    sweep = accuracy.cached_sweep(model)
    if sweep is None:
        return
    target = accuracy.explained_target(sweep.table)
    trust_cache = trust_view.cached_trust(model, target)
    rows = accuracy.with_outcomes(sweep.table, state.read_card(model))
    table = accuracy.ranking(
        sweep.summary,
        next(iter(accuracy.METRICS)),
        sanity=trust.sanity_by_map(trust_cache and trust_cache.summary),
        same=accuracy.coinciding(model),
    )
    maps = table[~table["chance"]]
    # The page's folder before anyone names one: FRACATLAS_ROOT, else the shipped samples.
    root, _reason = accuracy.fracatlas_root(os.environ.get("FRACATLAS_ROOT") or str(accuracy.SAMPLES_ROOT))
    if maps.empty or root is None:
        return
    method, layer = maps.iloc[0]["method"], maps.iloc[0]["layer"]
    chosen = rows[(rows["method"] == method) & (rows["layer"] == layer)]
    shown = [image for image in chosen["image"] if fracatlas.image_file(root, image).is_file()][:GALLERY_PAGE_SIZE]
    loaded = state.get_model(model)
    accuracy.read_outlines(root)
    for image in shown:
        pixels = accuracy.image_pixels(root, image)
        if pixels is not None:
            settings = views.CamSettings(method=method, layers=(layer,), target=target)
            views.explanation_or_error(loaded, pixels, image, settings)


def _data_map(model: str) -> None:
    from dashboard import data_map

    data_map.map_table(model)
    data_map.read_audit(model)
    data_map.map_figure(model, next(iter(data_map.COLOUR_OPTIONS.values())), "umap")


#: (page, what it loads first): run in this order, the slowest first visits first.
STEPS: tuple[tuple[str, Callable[[str], None]], ...] = (
    ("Heat-map accuracy", _heatmap_accuracy),
    ("Data map", _data_map),
)


def enabled() -> bool:
    """Whether start-up warms the caches (on unless MURA_LENS_WARMUP=0)."""
    return os.environ.get("MURA_LENS_WARMUP", "1") != "0"


def warm_caches(model: str = DEFAULT_MODEL) -> list[str]:
    """Run every step for ``model``; returns the pages whose step failed (logged, never raised)."""
    failed = []
    for page, step in STEPS:
        try:
            step(model)
        except Exception:  # noqa: BLE001 - a warm-up must never break the app; the page reports its own errors
            LOG.warning("warming the %s caches failed", page, exc_info=True)
            failed.append(page)
    return failed


def start() -> threading.Thread | None:
    """Start the warm-up once per process (later calls return the same thread); None when turned off."""
    global _thread
    if not enabled():
        return None
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=warm_caches, name="mura-lens-warmup", daemon=True)
            _thread.start()
    return _thread
