"""Explain with a fracture-aware model: both readings, each at its own threshold, and the fracture map first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.data import fracatlas
from core.data.imaging import load_radiograph
from core.model.checkpoint import DEFAULT_MODEL, load_model
from core.model.prediction import predict_image_outputs
from dashboard.studies import FRACATLAS_SAMPLES_DIR
from tests.app_pages import assert_clean, start_app
from tests.test_fracture_model import two_output  # noqa: F401 - the module fixture this file reuses


@pytest.fixture
def fracture_default(two_output: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """The two-output test model under the default model's name, with a card that names its MURA training."""
    shutil.copytree(two_output / "two", tmp_path / DEFAULT_MODEL)
    card_path = tmp_path / DEFAULT_MODEL / "model_card.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card |= {
        "name": DEFAULT_MODEL,
        "training_data": {"source": "test", "all": {"XR_HUMERUS": {}, "XR_FOREARM": {}}},
        "outputs": {"abnormal": {"trained_on": "test"}, "fracture": {"trained_on": "test"}},
    }
    card_path.write_text(json.dumps(card), encoding="utf-8")
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.delenv("MURA_ROOT", raising=False)
    return tmp_path


@pytest.mark.slow
def test_explain_opens_on_the_fracture_reading_and_map(fracture_default: Path) -> None:
    at = start_app().switch_page("../pages/explain.py").run()
    assert_clean(at)
    assert at.radio(key="cam_target").value == "fracture"
    labels = {m.label: m.value for m in at.metric}
    assert labels["Fracture threshold"] == "0.300"
    assert labels["Fracture verdict"] in ("fracture", "no fracture")
    # The page opens on the first FracAtlas sample: its P(fracture) is core.predict's number.
    first = fracatlas.read_images(fracatlas.resolve_root(FRACATLAS_SAMPLES_DIR))["file"].iloc[0]
    pixels = load_radiograph(fracatlas.image_file(FRACATLAS_SAMPLES_DIR, first)).pixels
    expected = predict_image_outputs(load_model(DEFAULT_MODEL, directory=fracture_default), [pixels])[0, 1]
    assert labels["Study P(fracture)"] == f"{expected:.3f}"
    assert any("FracAtlas's label" in c.value for c in at.caption)
    assert any("→ fracture" in "".join(image.captions) for image in at.image)


@pytest.mark.slow
def test_model_card_says_what_each_output_was_trained_on(fracture_default: Path) -> None:
    at = start_app().switch_page("../pages/model_card.py").run()
    assert_clean(at)
    assert any(h.value == "Two outputs: what each one was trained on" for h in at.subheader)
    table = next(df.value for df in at.dataframe if "Output" in df.value.columns)
    fracture = table.set_index("Output").loc["fracture (FracAtlas)"]
    assert fracture["Threshold"] == "0.300" and fracture["Trained on"] == "test"


@pytest.mark.slow
def test_overview_says_which_model_to_use_for_what(fracture_default: Path) -> None:
    at = start_app()
    assert_clean(at)
    assert any("Which model for what" in box.value and DEFAULT_MODEL in box.value for box in at.info)
