"""A two-output checkpoint (abnormal, fracture) travels where one output does: load, predict JSON,
ONNX, evaluate's tables and the CAM target."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core import predict as predict_cli
from core.cam.explain import explain
from core.eval.evaluation import FRACTURE_COLUMN, predict_fracatlas
from core.model.backends import batch_predictor
from core.model.checkpoint import load_model, save_ensemble_checkpoint
from core.model.fracture_net import TwoOutputNet
from core.model.prediction import model_inputs, predict_image_outputs, predict_images
from core.model.registry import MeanProbabilityEnsemble, ModelLoadError, create_model
from tests.fake_fracatlas import make_fake_fracatlas
from tests.synthetic import synthetic_radiograph

CARD = {
    "name": "two",
    "architecture": "efficientnet_lite0_fracture",
    "description": "test two-output model",
    "thresholds": {"default": 0.5, "XR_HUMERUS": 0.4},
    "tta": True,
    "fracture_threshold": 0.3,
}


@pytest.fixture(scope="module")
def two_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder with model ``two`` (two random lite0 members with fracture branches) and ``one``
    (the same members' MURA networks alone, as the base ensemble)."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("weights")
    bases = [create_model("efficientnet_lite0").eval() for _ in range(2)]
    nets = [TwoOutputNet(base) for base in bases]
    for name, arch, members in (("two", "efficientnet_lite0_fracture", nets), ("one", "efficientnet_lite0", bases)):
        (directory / name).mkdir()
        save_ensemble_checkpoint(directory / name / "checkpoint.pt", members, arch, 224)
        card = CARD | {"name": name, "architecture": arch}
        if name == "one":
            card.pop("fracture_threshold")
        (directory / name / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    return directory


@pytest.mark.slow
def test_loads_with_both_outputs_and_the_fracture_threshold(two_output: Path) -> None:
    loaded = load_model("two", directory=two_output)
    assert loaded.outputs == ("abnormal", "fracture")
    assert loaded.fracture_threshold == 0.3
    assert isinstance(loaded.model, MeanProbabilityEnsemble)
    assert load_model("one", directory=two_output).fracture_threshold is None


@pytest.mark.slow
def test_a_card_without_a_fracture_threshold_is_one_sentence(two_output: Path, tmp_path: Path) -> None:
    shutil.copytree(two_output / "two", tmp_path / "two")
    card = json.loads((tmp_path / "two" / "model_card.json").read_text())
    card.pop("fracture_threshold")
    (tmp_path / "two" / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="fracture_threshold"):
        load_model("two", directory=tmp_path)


@pytest.mark.slow
def test_abnormal_output_is_the_base_ensembles_own(two_output: Path) -> None:
    images = [synthetic_radiograph(seed, size=64) for seed in range(3)]
    both = predict_image_outputs(load_model("two", directory=two_output), images)
    assert both.shape == (3, 2)
    np.testing.assert_array_equal(both[:, 0], predict_images(load_model("one", directory=two_output), images))


@pytest.mark.slow
def test_onnx_gives_both_outputs_within_1e_4(two_output: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("MURA_LENS_ONNX_CACHE", str(tmp_path / "onnx"))
    loaded = load_model("two", directory=two_output)
    inputs = model_inputs(loaded, [synthetic_radiograph(seed, size=64) for seed in range(2)])
    onnx, eager = batch_predictor(loaded, "onnx")(inputs), batch_predictor(loaded, "torch")(inputs)
    assert onnx.shape == eager.shape == (2, 2)
    assert np.abs(onnx - eager).max() < 1e-4


@pytest.mark.slow
def test_predict_json_carries_fracture_probability(
    two_output: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(two_output))
    files = []
    for seed in range(2):
        from PIL import Image

        path = tmp_path / f"view{seed}.png"
        Image.fromarray(synthetic_radiograph(seed, size=64)).save(path)
        files.append(str(path))
    for model, has_fracture in (("two", True), ("one", False)):
        assert predict_cli.main(["--model", model, "--study", *files]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert all("fracture_probability" in line for line in lines)
        views = [line["fracture_probability"] for line in lines[:2]]
        if has_fracture:
            assert all(0 <= p <= 1 for p in views)
            assert lines[2]["fracture_probability"] == pytest.approx(np.mean(views), abs=1e-6)
            assert lines[2]["fracture_threshold"] == 0.3
        else:
            assert views == [None, None] and lines[2]["fracture_probability"] is None


@pytest.mark.slow
def test_cam_target_fracture_uses_the_fracture_map_by_default(two_output: Path) -> None:
    loaded = load_model("two", directory=two_output)
    pixels = synthetic_radiograph(1, size=64)
    fracture = explain(loaded, pixels, method="GradCAM", target="fracture")
    assert fracture.layers == ("fracture map (128 ch, stride 16)",)
    with torch.inference_mode():
        logits = loaded.model(model_inputs(loaded, [pixels]))
    assert fracture.probability == pytest.approx(float(torch.sigmoid(logits[0, 1])), abs=1e-5)
    abnormal = explain(loaded, pixels, method="GradCAM", target="abnormal")
    assert abnormal.layers == ("head conv (1280 ch, stride 32)",)
    assert abnormal.probability == pytest.approx(float(torch.sigmoid(logits[0, 0])), abs=1e-5)
    with pytest.raises(ValueError, match="target must be one of"):
        explain(load_model("one", directory=two_output), pixels, target="fracture")


@pytest.mark.slow
def test_evaluate_tables_gain_a_fracture_column(two_output: Path, tmp_path: Path) -> None:
    root = make_fake_fracatlas(tmp_path / "fracatlas")
    two = predict_fracatlas(load_model("two", directory=two_output), root, progress=False, limit=3)
    one = predict_fracatlas(load_model("one", directory=two_output), root, progress=False, limit=3)
    assert FRACTURE_COLUMN in two.columns and FRACTURE_COLUMN not in one.columns
    assert two[FRACTURE_COLUMN].between(0, 1).all()
    np.testing.assert_array_equal(two["probability"], one["probability"])


def test_fracture_metrics_come_from_the_test_part_only() -> None:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from core.eval.evaluation import summarise_fracture_output

    rng = np.random.default_rng(0)
    n = 80
    predictions = pd.DataFrame(
        {
            "file": [f"images/{i}.jpg" for i in range(n)],
            "region": "hand",
            "upper_limb": True,
            "fractured": np.arange(n) % 2,
            "hardware": 0,
            "duplicate_of": [f"images/{i}.jpg" for i in range(n)],
            "probability": rng.random(n),
            FRACTURE_COLUMN: rng.random(n),
        }
    )
    split = pd.DataFrame({"file": predictions["file"], "part": ["test" if i < 40 else "fold0" for i in range(n)]})
    summary = summarise_fracture_output(predictions, split, 0.5, n_boot=50)
    test = predictions.head(40)
    assert summary["images"] == 40
    assert summary["all"]["overall"]["auroc"]["point"] == pytest.approx(
        roc_auc_score(test["fractured"], test[FRACTURE_COLUMN])
    )
