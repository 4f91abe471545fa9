"""Slide-ready figures of CAM explanations: the radiograph, its overlay, a colour bar, and a caption
that says what the map is (model, method, layer, target, P(abnormal), threshold, colour scale).

Drawn with matplotlib's object API (``Figure``, never pyplot), which keeps no global state, so two
dashboard sessions can draw at once. The colour bar uses the overlay's own OpenCV colours
(:func:`core.cam.overlay.colormap_colours`), so bar and picture always agree.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure

from core.cam.explain import Explanation
from core.cam.overlay import DEFAULT_COLORMAP, colormap_colours

__all__ = ["MapScale", "caption_fields", "caption_text", "comparison_figure", "explanation_figure", "figure_png"]

_CAPTION_WIDTH = 120  # characters per caption line at the figures' width
_DPI = 150


@dataclass(frozen=True)
class MapScale:
    """What a heat map's colours mean: each map's own range (``peak`` None), or one raw range
    [0, ``peak``] shared by all the maps shown together."""

    peak: float | None = None

    @property
    def label(self) -> str:
        """The colour bar's label: what the numbers are."""
        if self.peak is None:
            return "normalised per image (0 = this map's lowest value, 1 = its highest)"
        return "raw CAM value (ReLU'd weighted activations, the method's own units), shared range"

    @property
    def short(self) -> str:
        """The scale in a few words, for captions."""
        return "normalised per image" if self.peak is None else f"absolute, raw 0 to {self.peak:.3g} shared"

    @property
    def top(self) -> float:
        """The value the hottest colour stands for."""
        return 1.0 if self.peak is None else self.peak


def caption_fields(
    explanation: Explanation, *, threshold: float | None, scale: MapScale, view: str | None = None
) -> dict[str, str]:
    """Everything a reader of a slide needs to know about one map, as label -> text."""
    smoothing = [
        name for name, on in (("augmentation", explanation.aug_smooth), ("eigen", explanation.eigen_smooth)) if on
    ]
    fields = {"View": view} if view else {}
    return fields | {
        "Model": explanation.model,
        "Method": explanation.method,
        "Layer": ", ".join(explanation.layers) or "every layer with a bias",
        "Target": explanation.target,
        "P(abnormal)": f"{explanation.probability:.3f}",
        "Threshold": "none (no verdict for this body part)" if threshold is None else f"{threshold:.3f}",
        "Smoothing": " + ".join(smoothing) or "none",
        "Colour scale": scale.short,
    }


def caption_text(fields: dict[str, str]) -> str:
    """The fields as one line of "Label: text" parts."""
    return " · ".join(f"{label}: {text}" for label, text in fields.items())


def _colour_map(colormap: str) -> ListedColormap:
    return ListedColormap(colormap_colours(colormap) / 255.0, name=colormap)


def _add_colorbar(
    figure: Figure, axes: Axes | Iterable[Axes], colormap: str, scale: MapScale, *, orientation: str = "vertical"
) -> None:
    mappable = ScalarMappable(norm=Normalize(0.0, scale.top), cmap=_colour_map(colormap))
    bar = figure.colorbar(mappable, ax=axes, orientation=orientation, fraction=0.05, pad=0.02)
    bar.set_label(textwrap.fill(scale.label, 50), fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _add_caption(figure: Figure, caption: str) -> None:
    # supxlabel, unlike figure.text, takes part in the constrained layout: it never covers a panel.
    figure.supxlabel(textwrap.fill(caption, _CAPTION_WIDTH), fontsize=8, x=0.01, ha="left")


def explanation_figure(
    pixels: np.ndarray,
    picture: np.ndarray,
    fields: dict[str, str],
    *,
    colormap: str = DEFAULT_COLORMAP,
    scale: MapScale = MapScale(),
) -> Figure:
    """The radiograph and its overlay side by side, a colour bar, and the caption below."""
    figure = Figure(figsize=(10, 5.6), layout="constrained")
    original, overlaid = figure.subplots(1, 2)
    original.imshow(pixels, cmap="gray", vmin=0, vmax=255)
    original.set_title("Radiograph", fontsize=10)
    overlaid.imshow(picture)
    overlaid.set_title(f"{fields.get('Method', '')} → {fields.get('Target', '')}", fontsize=10)
    for axes in (original, overlaid):
        axes.set_axis_off()
    _add_colorbar(figure, overlaid, colormap, scale)
    _add_caption(figure, caption_text(fields))
    return figure


def comparison_figure(
    panels: Sequence[tuple[str, np.ndarray]],
    fields: dict[str, str],
    *,
    colormap: str = DEFAULT_COLORMAP,
    scale: MapScale = MapScale(),
    columns: int = 4,
) -> Figure:
    """Several overlays of one view as one grid (titles name each panel's method and layer),
    one colour bar, and the caption of what they share."""
    if not panels:
        raise ValueError("a comparison figure needs at least one panel")
    width = min(columns, len(panels))
    rows = -(-len(panels) // width)
    figure = Figure(figsize=(3.2 * width + 1.2, 3.4 * rows + 0.9), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, width)).ravel()
    for panel_axes, (title, picture) in zip(axes, panels, strict=False):
        panel_axes.imshow(picture)
        panel_axes.set_title(textwrap.fill(title, 34), fontsize=8)
    for panel_axes in axes:
        panel_axes.set_axis_off()
    _add_colorbar(figure, axes.tolist(), colormap, scale)
    _add_caption(figure, caption_text(fields))
    return figure


def figure_png(figure: Figure, fields: dict[str, str] | None = None) -> bytes:
    """PNG bytes of a figure; the caption fields also go into the PNG's text chunks (searchable)."""
    buffer = io.BytesIO()
    metadata = {"Software": "MURA Lens"}
    if fields:
        metadata["Description"] = caption_text(fields)
    figure.savefig(buffer, format="png", dpi=_DPI, metadata=metadata)
    return buffer.getvalue()
