"""Slide figures (core.cam.figures): the caption names what a map is, and the PNGs decode with it inside."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.cam.explain import Explanation
from core.cam.figures import MapScale, caption_fields, comparison_figure, explanation_figure, figure_png
from core.cam.overlay import colormap_colours, overlay

PIXELS = np.tile(np.linspace(0, 255, 60).astype(np.uint8), (40, 1))
HEATMAP = np.tile(np.linspace(0, 1, 60, dtype=np.float32), (40, 1))
EXPLANATION = Explanation(
    HEATMAP,
    0.957,
    "GradCAM",
    ("stage 5 (96 ch, stride 16)",),
    "normal",
    model="mura_efficientnet_lite0",
    raw_map=HEATMAP[::2, ::2] * 0.02,
)


def test_caption_names_model_method_layer_target_probability_threshold_and_scale() -> None:
    fields = caption_fields(EXPLANATION, threshold=0.42, scale=MapScale(0.05), view="view1.png")
    assert fields == {
        "View": "view1.png",
        "Model": "mura_efficientnet_lite0",
        "Method": "GradCAM",
        "Layer": "stage 5 (96 ch, stride 16)",
        "Target": "normal",
        "P(abnormal)": "0.957",
        "Threshold": "0.420",
        "Smoothing": "none",
        "Colour scale": "absolute, raw 0 to 0.05 shared",
    }
    assert caption_fields(EXPLANATION, threshold=None, scale=MapScale())["Colour scale"] == "normalised per image"


def test_labelled_figure_png_decodes_and_carries_its_caption() -> None:
    fields = caption_fields(EXPLANATION, threshold=0.42, scale=MapScale(), view="view1.png")
    png = figure_png(explanation_figure(PIXELS, overlay(PIXELS, HEATMAP), fields), fields)
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.size[0] > picture.size[1] > 300
    description = picture.text["Description"]
    for text in (
        "Model: mura_efficientnet_lite0",
        "Method: GradCAM",
        "Layer: stage 5",
        "Target: normal",
        "P(abnormal): 0.957",
        "Threshold: 0.420",
        "Colour scale: normalised per image",
    ):
        assert text in description


def test_labelled_figure_has_a_colour_bar_labelled_with_its_scale() -> None:
    fields = caption_fields(EXPLANATION, threshold=0.42, scale=MapScale(0.05))
    figure = explanation_figure(PIXELS, overlay(PIXELS, HEATMAP), fields, scale=MapScale(0.05))
    bar = figure.axes[-1]  # the colour bar's own axes come last
    assert bar.get_ylabel().replace("\n", " ").startswith("raw CAM value")
    assert bar.get_ylim() == pytest.approx((0.0, 0.05))
    assert "P(abnormal): 0.957" in figure.get_supxlabel().replace("\n", " ")


def test_comparison_grid_is_one_figure_with_a_titled_panel_each() -> None:
    panels = [
        (f"{method} · stage 5", overlay(PIXELS, HEATMAP))
        for method in ("GradCAM", "LayerCAM", "HiResCAM", "XGradCAM", "EigenCAM")
    ]
    figure = comparison_figure(panels, {"Model": "m", "Target": "abnormal"})
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    assert titles == [title for title, _ in panels]
    assert Image.open(io.BytesIO(figure_png(figure))).format == "PNG"
    with pytest.raises(ValueError):
        comparison_figure([], {})


def test_colour_bar_uses_the_overlays_own_colours() -> None:
    colours = colormap_colours("jet")
    assert colours.shape == (256, 3)
    np.testing.assert_array_equal(overlay(np.zeros((1, 1), np.uint8), np.ones((1, 1)), opacity=1.0)[0, 0], colours[255])
