"""Heat-map accuracy's before/after section: the model that learned MURA's abnormal label beside the fracture-aware
model built on it, on the same outlined FracAtlas test fractures (core.eval.before_after computes, this shows).

Figures come from both models' cached localisation rows (re-read when a cache file changes); the gallery's maps
from the small file ``python -m core.before_after`` wrote, so no model runs here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core.cam.overlay import resize_heatmap
from core.data import fracatlas, fracture_split
from core.eval import before_after
from core.eval.before_after import AFTER, BEFORE, CHANCE, DIFFERENCE, Comparison, Gallery, GalleryError, ModelPair
from core.eval.localization_sweep import DATASET
from core.model.checkpoint import list_shipped_models
from core.model.registry import ABNORMAL, FRACTURE
from core.store.artifacts import ModelArtifacts, file_version, weights_dir
from dashboard import accuracy, views

__all__ = ["PLAIN_WORDS", "comparison_for", "table_of", "sentence_of", "figure_of", "show"]

#: Who is who, for an educator.
PLAIN_WORDS = {
    BEFORE: "a model that learned MURA's *abnormal* label; its maps explain P(abnormal)",
    AFTER: "a model taught with expert outlines; its maps explain P(fracture)",
}
_TARGET_WORDS = {"abnormal": "P(abnormal)", "fracture": "P(fracture)"}
_SCORE_NAMES = {"hit": "Hit rate", "energy": "Energy inside"}


def _versions(files: ModelArtifacts) -> tuple[int, ...]:
    trust_files = [
        files.resolve(path)
        for output in (ABNORMAL, FRACTURE)
        for path in (files.trust_rows(output), files.trust_summary(output))
    ]
    return tuple(
        file_version(path)
        for path in (
            files.card,
            files.localization(DATASET),
            files.localization_summary(DATASET),
            *trust_files,
            files.directory / fracture_split.SPLIT_FILE,
        )
    )


@st.cache_data(show_spinner=False, max_entries=8)
def _pair(model: str, directory: str, cards: tuple[int, ...]) -> ModelPair | None:
    return before_after.model_pair(model, Path(directory))


@st.cache_data(show_spinner="Comparing the two models…", max_entries=8)
def _comparison(before: str, after: str, directory: str, versions: tuple[int, ...]) -> Comparison | str:
    return before_after.compare_models(ModelPair(before, after), Path(directory))


@st.cache_data(show_spinner=False, max_entries=4)
def _gallery(path: str, version: int) -> Gallery | None:
    return before_after.read_gallery(ModelArtifacts(Path(path).parent))


def comparison_for(model: str) -> Comparison | str | None:
    """The comparison of the pair ``model`` belongs to (cached per file version), one sentence saying why there
    is none, or None when no shipped model pairs a fracture-aware model with its base."""
    directory = weights_dir()
    cards = tuple(file_version(ModelArtifacts.of(name, directory).card) for name in list_shipped_models(directory))
    pair = _pair(model, str(directory), cards)
    if pair is None:
        return None
    versions = _versions(ModelArtifacts.of(pair.before, directory)) + _versions(
        ModelArtifacts.of(pair.after, directory)
    )
    return _comparison(pair.before, pair.after, str(directory), versions)


def _row_name(side: str, comparison: Comparison, maps: tuple) -> str:
    if side == DIFFERENCE:
        return "After minus before (paired)"
    if side == CHANCE:
        return "Uniform map (chance)"
    choice = maps[0 if side == BEFORE else 1]
    model = comparison.pair.before if side == BEFORE else comparison.pair.after
    return f"{side.capitalize()}: {model} · {choice.label} · {_TARGET_WORDS.get(choice.target, choice.target)}"


def table_of(comparison: Comparison, which: str) -> pd.DataFrame:
    """The shown table of ``which`` ("opening" or "passing"): one row per side that has a map, the paired
    difference where both have one, and the chance level; hit rate and energy inside with their intervals."""
    table: pd.DataFrame = getattr(comparison, which)
    maps = getattr(comparison, f"{which}_maps")
    records = []
    for side, row in table.iterrows():
        if row[["hit", "energy"]].isna().all():
            continue  # this side has no such map, so neither has the difference
        records.append(
            {"": _row_name(str(side), comparison, maps)}
            | {
                f"{name} (95% CI)": accuracy.interval_text(row[score], row[f"{score}_low"], row[f"{score}_high"])
                for score, name in _SCORE_NAMES.items()
            }
        )
    return pd.DataFrame(records)


def sentence_of(comparison: Comparison, which: str) -> str:
    """One sentence on the hit rates of ``which`` maps and their paired difference (said only where both exist)."""
    table: pd.DataFrame = getattr(comparison, which)
    before, after, difference = (table.loc[side] for side in (BEFORE, AFTER, DIFFERENCE))
    if pd.isna(difference["hit"]):
        return ""
    low, high = difference["hit_low"], difference["hit_high"]
    ratio = f" ({after['energy'] / before['energy']:.1f}×)" if before["energy"] > 0 else ""
    clear = "more often" if low > 0 else "less often" if high < 0 else "about as often (the interval spans 0)"
    return (
        f"The after map hits the outline on {after['hit']:.0%} of these fractures, the before map on "
        f"{before['hit']:.0%}: it points at the fracture {clear}, a paired difference of "
        f"{accuracy.interval_text(difference['hit'], low, high)}; energy inside {before['energy']:.3f} → "
        f"{after['energy']:.3f}{ratio}."
    )


def figure_of(comparison: Comparison) -> go.Figure:
    """Hit rate and energy inside of both models' maps with 95% CIs, the uniform map as a dotted line."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=list(_SCORE_NAMES.values()), horizontal_spacing=0.15)
    colours = {BEFORE: "#7f7f7f", AFTER: "#1f77b4"}
    kinds = {"opening": "opens on", "passing": "best passing"}
    for column, score in enumerate(_SCORE_NAMES, start=1):
        for side in (BEFORE, AFTER):
            points = [
                (label, getattr(comparison, which).loc[side])
                for which, label in kinds.items()
                if getattr(comparison, which) is not None and pd.notna(getattr(comparison, which).loc[side, score])
            ]
            figure.add_trace(
                go.Scatter(
                    x=[row[score] for _, row in points],
                    y=[label for label, _ in points],
                    mode="markers",
                    marker={"size": 11, "color": colours[side]},
                    name=side,
                    legendgroup=side,
                    showlegend=column == 1,
                    error_x={
                        "type": "data",
                        "symmetric": False,
                        "array": [row[f"{score}_high"] - row[score] for _, row in points],
                        "arrayminus": [row[score] - row[f"{score}_low"] for _, row in points],
                    },
                    hovertemplate=f"{side} · %{{y}}: %{{x:.3f}}<extra></extra>",
                ),
                row=1,
                col=column,
            )
        figure.add_vline(
            x=float(comparison.opening.loc[CHANCE, score]), line_dash="dot", row=1, col=column, annotation_text="chance"
        )
    figure.update_layout(height=260, margin={"l": 10, "r": 10, "t": 40, "b": 30}, legend={"orientation": "h"})
    return figure


def _passing_notes(comparison: Comparison) -> list[str]:
    """Why a side has no best passing map: its output unchecked, or no map of it passes."""
    notes = []
    for index, side in enumerate((BEFORE, AFTER)):
        model = comparison.pair.before if side == BEFORE else comparison.pair.after
        target = comparison.opening_maps[index].target
        if side in comparison.unchecked:
            notes.append(
                f"The {side} model's maps of {_TARGET_WORDS.get(target, target)} have not been through the "
                f"randomisation check yet (no core.trust cache of that output for {model}), so no best passing map "
                "is named for it and no paired difference is shown."
            )
        elif comparison.passing_maps[index] is None:
            notes.append(f"No map of the {side} model ({model}) passes the randomisation check.")
    return notes


def _show_gallery(comparison: Comparison) -> None:
    files = ModelArtifacts.of(comparison.pair.after)
    try:
        gallery = _gallery(str(files.before_after_gallery), file_version(files.before_after_gallery))
    except GalleryError as exc:
        st.error(str(exc))
        return
    if gallery is None:
        st.info("No before/after gallery yet: run `python -m core.before_after` and reload.")
        return
    stale = before_after.stale_reason(gallery, comparison)
    if stale:
        st.warning(stale)
        return
    st.caption(
        f"The same test radiographs under both models' opening maps, {before_after.GALLERY_RULE}; the expert "
        f"outline in cyan. {fracatlas.CREDIT}"
    )
    for image, outcome, (before_map, after_map) in zip(gallery.images, gallery.outcomes, gallery.heatmaps, strict=True):
        root = accuracy.image_root(image)
        pixels = None if root is None else accuracy.image_pixels(root, image)
        if pixels is None:
            st.caption(f"{image}: not in the FracAtlas folder, so not drawn.")
            continue
        mask = accuracy.read_outlines(root).mask(image)
        columns = st.columns(3)
        pictures = (
            ("radiograph and expert outline", np.dstack([pixels] * 3)),
            *(
                (
                    f"{side}: {side_outcome}",
                    views.overlay_with_boxes(pixels, resize_heatmap(heat.astype(np.float32) / 255.0, *pixels.shape)),
                )
                for side, side_outcome, heat in zip((BEFORE, AFTER), outcome, (before_map, after_map), strict=True)
            ),
        )
        for column, (caption, picture) in zip(columns, pictures, strict=True):
            drawn = accuracy.draw_outline(picture, mask) if mask.shape == pixels.shape else picture
            column.image(drawn, width="stretch", caption=f"{image.removeprefix('images/')} · {caption}")


def show(model: str) -> None:
    """The section: who is who, both models' numbers with paired differences, and the gallery."""
    st.subheader("Before and after: the same fractures under both models")
    comparison = comparison_for(model)
    if comparison is None:
        st.caption(
            "No fracture-aware model is shipped beside the model it was built on, so there is no before/after "
            "comparison here."
        )
        return
    if isinstance(comparison, str):
        st.info(comparison)
        return
    pair = comparison.pair
    st.markdown(
        f"**Before** ({pair.before}): {PLAIN_WORDS[BEFORE]}. **After** ({pair.after}): {PLAIN_WORDS[AFTER]}. "
        f"Both are scored on the same {len(comparison.images)} outlined fractures of FracAtlas's fixed test part, "
        "radiographs the fracture output never trained on."
    )
    st.caption(
        f"95% bootstrap intervals over the images, resampled by copy group ({comparison.n_groups} groups, "
        f"{comparison.n_boot} resamples); both models and the difference use the same resamples, so the difference "
        "is paired image by image."
    )
    st.markdown("**(a) The map each model opens on** (GradCAM at its default layer)")
    st.dataframe(table_of(comparison, "opening"), hide_index=True, key="before_after_opening")
    st.caption(sentence_of(comparison, "opening"))
    st.markdown("**(b) The best map that passes the randomisation check** (highest hit rate among them)")
    if comparison.passing is not None:
        st.dataframe(table_of(comparison, "passing"), hide_index=True, key="before_after_passing")
        said = sentence_of(comparison, "passing")
        st.caption((said + " " if said else "") + "Chosen on these same images, so its figure leans optimistic.")
    for note in _passing_notes(comparison):
        st.caption(note)
    st.plotly_chart(figure_of(comparison), key="before_after_figure")
    _show_gallery(comparison)
