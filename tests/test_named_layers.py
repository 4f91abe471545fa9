"""Any named layer, not only the presets (issue 27, as TorchCAM's demo offers): every convolution of the
network by its module path, in core.explain and in Explain's sidebar."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.cam.explain import explain
from core.data.imaging import load_radiograph
from core.model.checkpoint import DEFAULT_MODEL, load_model
from tests.app_pages import assert_clean, start_app

VIEW = Path(__file__).resolve().parent.parent / "data_samples" / "synthetic" / "humerus_fracture" / "view1.png"


def test_a_convolution_by_path_explains_like_a_preset(scratch_weights: Path) -> None:
    loaded = load_model(DEFAULT_MODEL, directory=scratch_weights)
    pixels = load_radiograph(VIEW.read_bytes()).pixels
    path = loaded.named_layers[len(loaded.named_layers) // 2]
    assert path not in loaded.cam_layers and loaded.is_layer(path)
    explained = explain(loaded, pixels, layers=[path])
    assert explained.layers == (path,) and explained.heatmap.shape == pixels.shape
    with pytest.raises(ValueError, match="convolution's module path"):
        explain(loaded, pixels, layers=["no.such.layer"])


def test_explain_sidebar_takes_any_named_layer(use_scratch_weights: Path) -> None:
    loaded = load_model(DEFAULT_MODEL, directory=use_scratch_weights)
    path = loaded.named_layers[len(loaded.named_layers) // 2]
    at = start_app().switch_page("../pages/explain.py").run()
    at.file_uploader(key="explain_upload").set_value((VIEW.name, VIEW.read_bytes(), "image/png")).run()
    at.sidebar.selectbox(key="cam_named").set_value(path).run()
    assert_clean(at)
    captions = [c for image in at.image for c in image.captions]
    assert any(c.startswith(f"GradCAM on {path} →") for c in captions), captions
