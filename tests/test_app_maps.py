"""AppTest of Explain's heat-map scale, slow-method estimates, Compare's own confirm and the figure downloads
(issue 13 items 2, 4 and 5). Runs on the scratch model and the project's synthetic samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import slow_runs
from tests.app_pages import assert_clean
from tests.test_app_explain import FRACTURE_VIEWS, SMALL_LAYER, open_explain, overlay_urls, upload

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def colour_scale(at: AppTest) -> list[str]:
    return [c for c in captions(at) if c.startswith("Colour scale: ")]


def colour_bars(at: AppTest) -> list[str]:
    """The st.html colour bars' markup (AppTest has no typed accessor for st.html)."""
    return [element.proto.body for element in at.get("html") if "linear-gradient" in element.proto.body]


def test_maps_have_a_colour_bar_that_says_per_image_and_an_absolute_scale(use_scratch_weights: Path) -> None:
    at = upload(open_explain(), FRACTURE_VIEWS)
    assert_clean(at)
    [scale] = colour_scale(at)
    assert scale.startswith("Colour scale: normalised per image (0 = this map's lowest value, 1 = its highest)")
    [bar] = colour_bars(at)
    assert bar.endswith("<span>0</span><span>0.5</span><span>1</span></div></div>")
    grid = [c for image in at.image for c in image.captions if "→" in c and "P(abnormal)" in c]
    assert len(grid) == 2 and all(c.endswith("· per-image scale") for c in grid)
    per_image = overlay_urls(at)

    at.sidebar.radio(key="cam_scale").set_value("absolute").run()
    assert_clean(at)
    [scale] = colour_scale(at)
    assert scale.startswith("Colour scale: raw CAM value (ReLU'd weighted activations")
    [bar] = colour_bars(at)
    assert "<span>1</span>" not in bar  # ticked in raw units up to the shared peak
    assert "covers every map here and, for fast methods, the same maps for the other target" in scale
    grid = [c for image in at.image for c in image.captions if "→" in c and "P(abnormal)" in c]
    assert len(grid) == 2 and all(c.endswith("· absolute scale") for c in grid)
    assert set(overlay_urls(at)).isdisjoint(per_image)


def test_a_slow_method_gives_a_measured_estimate_before_it_runs(
    use_scratch_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slow_runs, "_MEASURED", {})  # no earlier run's rate: the first estimate, from a timed pass
    at = upload(open_explain(), FRACTURE_VIEWS[:1])
    at.sidebar.multiselect(key="cam_layers").set_value([SMALL_LAYER])
    at.sidebar.selectbox(key="cam_method").set_value("ScoreCAM").run()
    assert_clean(at)
    [warning] = [w.value for w in at.warning if "ScoreCAM is slow" in w.value]
    assert "Estimate: about" in warning
    assert "33 forward passes per view" in warning  # 1 + 32 channels of the small layer
    assert "timed on this machine" in warning


def test_compare_confirms_its_own_slow_methods_and_downloads_one_figure(use_scratch_weights: Path) -> None:
    at = upload(open_explain(), FRACTURE_VIEWS[:1])
    at.sidebar.multiselect(key="cam_layers").set_value([SMALL_LAYER]).run()
    at.multiselect(key="explain_compare_methods").set_value(["GradCAM", "ScoreCAM"]).run()
    assert_clean(at)
    assert not any("confirm them above" in c for c in captions(at))
    assert any(w.value.startswith("ScoreCAM is slow (estimate: about") for w in at.warning)
    panels = [c for image in at.image for c in image.captions if c.startswith(("GradCAM ·", "ScoreCAM ·"))]
    assert panels == [f"GradCAM · {SMALL_LAYER}"]

    at.button(key="explain_compare_confirm_1").click().run()
    assert_clean(at)
    panels = [c for image in at.image for c in image.captions if c.startswith(("GradCAM ·", "ScoreCAM ·"))]
    assert panels == [f"GradCAM · {SMALL_LAYER}", f"ScoreCAM · {SMALL_LAYER}"]
    assert "Compare grid (.png)" in {b.label for b in at.get("download_button")}
    assert not any(w.value.startswith("ScoreCAM is slow") for w in at.warning)


def test_one_view_in_detail_offers_a_labelled_figure(use_scratch_weights: Path) -> None:
    at = upload(open_explain(), FRACTURE_VIEWS[:1])
    assert_clean(at)
    assert "Labelled figure (.png)" in {b.label for b in at.get("download_button")}
