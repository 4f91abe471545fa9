"""The fracture output's reading, for a model that has one: P(fracture) per view and the study's
fracture verdict at the output's own threshold, beside (never mixed with) MURA's "abnormal"."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import streamlit as st

from core.data import fracture_split
from core.model.checkpoint import LoadedModel
from core.model.registry import FRACTURE
from core.scoping.head import fracture_scope_reason
from core.store.artifacts import file_version
from dashboard import scope_view, views

MEANING = (
    "**Fracture** is FracAtlas's label: an expert saw a broken bone. MURA's **abnormal** (above) is "
    "broader: fractures, but also metal hardware, arthritis and other findings. The two outputs are "
    "judged separately, each at its own threshold."
)


def cached_fractures(loaded: LoadedModel, images: Sequence[np.ndarray]) -> list[float]:
    """P(fracture) per image (same forward, flip TTA and rounding path as core.predict), from the one
    cached prediction of each image the views read too."""
    column = loaded.outputs.index(FRACTURE)
    return [views.cached_outputs(loaded, pixels)[column] for pixels in images]


@st.cache_data(show_spinner=False, max_entries=8)
def _trained_files(path: str, version: int) -> frozenset[str]:
    return fracture_split.trained_files(fracture_split.read_split(Path(path)))


def trained_files(directory: Path) -> frozenset[str] | None:
    """The FracAtlas files the fracture output of the model in ``directory`` was trained on (its split file,
    read once per file version rather than on every run); None when the folder has no split file.

    Raises:
        fracture_split.SplitError: the split file is damaged (one sentence).
    """
    path = directory / fracture_split.SPLIT_FILE
    return _trained_files(str(path), file_version(path)) if path.is_file() else None


def trained_on(loaded: LoadedModel, file: str) -> bool:
    """Whether the model's fracture output was trained on this FracAtlas file."""
    return file in (trained_files(loaded.directory) or ())


def show_fracture_reading(
    loaded: LoadedModel, images: list[tuple[str, np.ndarray]], colour: Sequence[bool] = ()
) -> None:
    """The fracture section of a study: metrics, per-view probabilities, and no verdict for views outside
    the output's scope (a view the scope head sees as another body part, or a colour picture)."""
    if FRACTURE not in loaded.outputs or not images:
        return
    threshold = loaded.fracture_threshold
    pixels = [p for _, p in images]
    fractures = cached_fractures(loaded, pixels)
    scopes = scope_view.cached_scopes(loaded, pixels, colour) or []
    reasons = [fracture_scope_reason(scope) for scope in scopes] or [None] * len(images)
    st.subheader("Fracture")
    st.caption(MEANING)
    kept = [p for p, reason in zip(fractures, reasons, strict=True) if reason is None]
    if not kept:
        first = next(r for r in reasons if r)
        st.warning(
            f"No fracture verdict: {first}; the fracture output was trained on upper-limb radiographs only.",
            icon=":material/help:",
        )
        st.caption(f"P(fracture) = {np.mean(fractures):.3f}, shown for reference only.")
    else:
        probability = float(np.mean(kept))
        probability_col, verdict_col, threshold_col = st.columns(3)
        probability_col.metric(
            "Study P(fracture)", f"{probability:.3f}", help="Mean of the in-scope views' P(fracture)."
        )
        verdict_col.metric("Fracture verdict", "fracture" if probability >= threshold else "no fracture")
        threshold_col.metric(
            "Fracture threshold",
            f"{threshold:.3f}",
            help="Chosen on FracAtlas's training folds (maximum Cohen's kappa, out of fold); "
            "the test part was never used.",
        )
        if len(kept) < len(fractures):
            st.caption(
                "Views left out of the fracture mean (outside the fracture output's scope): "
                + ", ".join(f"`{name}` ({reason})" for (name, _), reason in zip(images, reasons, strict=True) if reason)
                + "."
            )
    st.caption(" · ".join(f"`{name}`: P(fracture) = {p:.3f}" for (name, _), p in zip(images, fractures, strict=True)))
