"""Issue 27, item 6: one image, one probability, whatever path computes it. The page's view caption
(core.predict, with the card's flip TTA), the labelled figure and the compare grid (core.explain) and
core.explain_grid must agree; before, the CAM's own forward pass gave the unmirrored image's probability."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.cam.explain import explain, explain_grid
from core.cam.figures import MapScale, caption_fields
from core.data.imaging import load_radiograph
from core.model.checkpoint import DEFAULT_MODEL, load_model
from core.model.prediction import predict_images

VIEW = Path(__file__).resolve().parent.parent / "data_samples" / "synthetic" / "humerus_fracture" / "view1.png"


@pytest.fixture(scope="module")
def flip_tta_model(tmp_path_factory: pytest.TempPathFactory, scratch_weights: Path):
    """The scratch model with the card asking for flip TTA, as the shipped cards do."""
    directory = tmp_path_factory.mktemp("tta_weights")
    shutil.copytree(scratch_weights / DEFAULT_MODEL, directory / DEFAULT_MODEL)
    card_path = directory / DEFAULT_MODEL / "model_card.json"
    card_path.write_text(json.dumps(json.loads(card_path.read_text()) | {"tta": True}))
    return load_model(DEFAULT_MODEL, directory=directory)


@pytest.mark.slow  # every inference path on the shipped model
def test_every_path_gives_the_same_probability(flip_tta_model) -> None:
    pixels = load_radiograph(VIEW.read_bytes()).pixels
    # An asymmetric image, so a mirror changes the output and the test can tell the paths apart.
    pixels = np.ascontiguousarray(np.concatenate([pixels, np.zeros_like(pixels[:, : pixels.shape[1] // 2])], axis=1))
    predicted = float(predict_images(flip_tta_model, [pixels])[0])
    for method in ("GradCAM", "FullGrad"):
        explained = explain(flip_tta_model, pixels, method=method)
        assert explained.probability == predicted, method
    smoothed = explain(flip_tta_model, pixels, aug_smooth=True)
    assert smoothed.probability == predicted
    layer = flip_tta_model.config.default_cam_layer
    for result in explain_grid(flip_tta_model, pixels, methods=["GradCAM", "HiResCAM"], layers=[layer]).values():
        assert result.probability == predicted
    fields = caption_fields(explain(flip_tta_model, pixels), threshold=0.5, scale=MapScale())
    assert fields["P(abnormal)"] == f"{predicted:.3f}"  # the labelled figure's caption
