"""The shipped models and their cached evaluations can never drift apart.

Every model folder under weights/ is checked. Real-data checks on ../shared/mura (skipped with a
reason when absent): the checkpoint's predictions equal the cached predictions_valid.csv rows, and
the AUROCs in metrics_valid.json are what predictions_valid.csv and the official labels give.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from core.data import mura
from core.data.imaging import load_radiograph
from core.eval.metrics import study_table
from core.model.checkpoint import DEFAULT_MODEL, list_shipped_models, load_model
from core.model.prediction import predict_images
from core.store.artifacts import CARD_FILE, SHIPPED_WEIGHTS_DIR, ModelArtifacts

SHIPPED = list_shipped_models(SHIPPED_WEIGHTS_DIR)


@pytest.fixture(scope="module", params=SHIPPED)
def model_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def cached(model_name: str) -> pd.DataFrame:
    return pd.read_csv(SHIPPED_WEIGHTS_DIR / model_name / "predictions_valid.csv")


@pytest.fixture(scope="module")
def metrics(model_name: str) -> dict:
    return json.loads((SHIPPED_WEIGHTS_DIR / model_name / "metrics_valid.json").read_text())


def test_the_default_model_is_shipped() -> None:
    assert DEFAULT_MODEL in SHIPPED


def test_shipped_model_has_card_weights_and_cache(model_name: str) -> None:
    directory = SHIPPED_WEIGHTS_DIR / model_name
    card = json.loads((directory / CARD_FILE).read_text())
    for key in (
        "architecture",
        "initialisation",
        "training_data",
        "recipe",
        "thresholds",
        "limitations",
        "training_time_seconds",
        "holdout_metrics",
    ):
        assert key in card, key
    assert (directory / "checkpoint.pt").stat().st_size < 50 * 2**20
    files = ModelArtifacts(directory)  # a model built on a base model reads the base's training log
    assert files.resolve(files.training_log).is_file()


def test_cached_predictions_cover_the_valid_split_present(cached: pd.DataFrame, mura_root: Path) -> None:
    present = mura.read_images(mura_root, "valid")
    assert set(cached["path"]) == set(present["path"])
    merged = cached.merge(present[["path", "label", "study_type"]], on="path", suffixes=("", "_official"))
    assert (merged["label"] == merged["label_official"]).all()
    assert (merged["study_type"] == merged["study_type_official"]).all()


@pytest.mark.slow  # both shipped models over real valid/ images
@pytest.mark.mura
def test_checkpoint_reproduces_cached_probabilities(model_name: str, cached: pd.DataFrame, mura_root: Path) -> None:
    loaded = load_model(model_name, directory=SHIPPED_WEIGHTS_DIR)
    sample = pd.concat([g.head(3) for _, g in cached.groupby("study_type")])
    pixels = [load_radiograph(mura.image_file(mura_root, p)).pixels for p in sample["path"]]
    fresh = predict_images(loaded, pixels)
    assert fresh == pytest.approx(sample["probability"].to_numpy(), abs=2e-5)


def test_metrics_json_agrees_with_cached_predictions(cached: pd.DataFrame, metrics: dict) -> None:
    assert metrics["image"]["overall"]["auroc"]["point"] == pytest.approx(
        roc_auc_score(cached["label"], cached["probability"]), abs=1e-9
    )
    studies = study_table(cached)
    for study_type, group in studies.groupby("study_type"):
        if group["label"].nunique() < 2:
            continue
        reported = metrics["study"][study_type]["auroc"]
        assert reported["point"] == pytest.approx(roc_auc_score(group["label"], group["probability"]), abs=1e-9)
        assert reported["low"] <= reported["point"] <= reported["high"]
