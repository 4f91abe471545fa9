"""The fracture output's Platt scaling: fitted on out-of-fold predictions, applied by the ensemble on
every path (torch, ONNX), refused in one sentence when the card's numbers are unusable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit, logit

from core.model.backends import batch_predictor
from core.model.checkpoint import CALIBRATION_KEY, load_model
from core.model.fracture_model import FRACTURE_OOF, calibrate_card
from core.model.prediction import model_inputs
from core.model.registry import ModelLoadError
from core.model.thresholds import apply_platt, choose_threshold, fit_platt
from core.store.artifacts import SHIPPED_WEIGHTS_DIR, ModelArtifacts
from tests.synthetic import synthetic_radiograph
from tests.test_fracture_model import two_output  # noqa: F401 - the module fixture this file reuses

SLOPE, INTERCEPT = 1.5, -2.0


def _overconfident(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores whose true frequency is sigmoid(1.5 * logit(score) - 2): they run high."""
    rng = np.random.default_rng(seed)
    raw = expit(rng.normal(1.0, 1.5, size=n))
    labels = (rng.random(n) < expit(SLOPE * logit(raw) + INTERCEPT)).astype(int)
    return labels, raw


def test_platt_recovers_a_known_miscalibration() -> None:
    labels, raw = _overconfident(40_000)
    slope, intercept = fit_platt(labels, raw)
    assert slope == pytest.approx(SLOPE, abs=0.05) and intercept == pytest.approx(INTERCEPT, abs=0.08)
    calibrated = apply_platt(raw, slope, intercept)
    assert abs(calibrated.mean() - labels.mean()) < 0.01 < abs(raw.mean() - labels.mean())
    assert (np.argsort(calibrated, kind="stable") == np.argsort(raw, kind="stable")).all()  # ranks kept


def test_platt_refuses_scores_that_rank_backwards() -> None:
    labels, raw = _overconfident(2_000)
    with pytest.raises(ValueError, match="not positive"):
        fit_platt(labels, 1.0 - raw)


def test_the_card_threshold_is_the_calibrated_image_of_the_raw_one() -> None:
    labels, raw = _overconfident(3_000, seed=1)
    card = calibrate_card({"outputs": {"fracture": {}}}, pd.DataFrame({"fractured": labels, "probability": raw}))
    entry = card[CALIBRATION_KEY]
    assert entry["out_of_fold_ece"]["calibrated"] < entry["out_of_fold_ece"]["raw"]
    # Kappa depends on the cut's rank only: the calibrated threshold cuts where the raw one did (up to
    # the 4-decimal rounding of both candidates).
    calibrated = apply_platt(raw, entry["slope"], entry["intercept"])
    same = (calibrated >= card["fracture_threshold"]) == (raw >= choose_threshold(labels, raw))
    assert same.mean() > 0.995
    assert card["outputs"]["fracture"]["threshold"] == card["fracture_threshold"]


@pytest.fixture
def calibrated(two_output: Path, tmp_path: Path) -> Path:  # noqa: F811
    """The two-output test model, and a copy whose card calibrates the fracture output."""
    shutil.copytree(two_output, tmp_path, dirs_exist_ok=True)
    shutil.copytree(two_output / "two", tmp_path / "cal")
    card = json.loads((tmp_path / "cal" / "model_card.json").read_text(encoding="utf-8"))
    card[CALIBRATION_KEY] = {"slope": SLOPE, "intercept": INTERCEPT}
    (tmp_path / "cal" / "model_card.json").write_text(json.dumps(card | {"name": "cal"}), encoding="utf-8")
    return tmp_path


@pytest.mark.slow
def test_the_ensemble_calibrates_the_fracture_logit_only(calibrated: Path) -> None:
    raw, scaled = load_model("two", directory=calibrated), load_model("cal", directory=calibrated)
    inputs = model_inputs(raw, [synthetic_radiograph(seed, size=64) for seed in range(3)])
    with torch.inference_mode():
        before, after = raw.model(inputs), scaled.model(inputs)
    torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(after[:, 1], SLOPE * before[:, 1] + INTERCEPT, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_onnx_applies_the_same_calibration(calibrated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("MURA_LENS_ONNX_CACHE", str(tmp_path / "onnx"))
    images = [synthetic_radiograph(seed, size=64) for seed in range(2)]
    scaled = load_model("cal", directory=calibrated)
    inputs = model_inputs(scaled, images)
    onnx, eager = batch_predictor(scaled, "onnx")(inputs), batch_predictor(scaled, "torch")(inputs)
    assert np.abs(onnx - eager).max() < 1e-4
    # A graph exported for the uncalibrated twin is not reused for the calibrated model.
    raw = batch_predictor(load_model("two", directory=calibrated), "onnx")(inputs)
    assert np.abs(raw[:, 1] - onnx[:, 1]).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("entry", [{"slope": -1.0, "intercept": 0.0}, {"slope": "1"}, [1, 2], {"slope": float("nan")}])
def test_an_unusable_calibration_is_one_sentence(calibrated: Path, entry: object) -> None:
    path = calibrated / "cal" / "model_card.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(card | {CALIBRATION_KEY: entry}), encoding="utf-8")
    with pytest.raises(ModelLoadError, match=CALIBRATION_KEY):
        load_model("cal", directory=calibrated)


def test_the_shipped_card_is_calibrated_on_its_out_of_fold_predictions() -> None:
    files = ModelArtifacts.of("mura_efficientnet_lite0_fracture", SHIPPED_WEIGHTS_DIR)
    card = json.loads(files.card.read_text(encoding="utf-8"))
    oof = pd.read_csv(files.predictions(FRACTURE_OOF))
    refit = calibrate_card(card, oof)
    assert refit[CALIBRATION_KEY] == card[CALIBRATION_KEY]
    assert refit["fracture_threshold"] == card["fracture_threshold"]
