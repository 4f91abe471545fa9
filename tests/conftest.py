"""Shared fixtures: the MURA copy (skipped with a reason when absent), and a scratch model folder
with cached evaluation over a miniature synthetic MURA root for the dashboard tests."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from core.data import mura
from core.data.imaging import load_radiograph
from core.data.preprocess import letterbox, to_model_input
from core.eval.evaluation import PREDICTION_COLUMNS
from core.eval.metrics import summarise
from core.model.checkpoint import DEFAULT_MODEL, save_checkpoint
from core.model.registry import create_model
from tests.fake_mura import make_fake_mura
from tests.server import RunningDashboard, running_dashboard

# Tests share two cores with whatever else runs; one thread each keeps them predictable.
torch.set_num_threads(1)
# No start-up cache warm-up thread in tests (or in the servers they start): tests/test_warmup.py turns it on.
os.environ.setdefault("MURA_LENS_WARMUP", "0")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MURA = PROJECT_ROOT.parent / "shared" / "mura" / "MURA-v1.1"


@pytest.fixture(scope="session")
def mura_root() -> Path:
    """The MURA v1.1 copy from MURA_ROOT, else ../shared/mura/MURA-v1.1; skip when absent."""
    root = Path(os.environ.get("MURA_ROOT") or DEFAULT_MURA)
    if not (root / "valid_image_paths.csv").is_file():
        pytest.skip(f"MURA copy not found at {root} (set MURA_ROOT to run tests on real radiographs)")
    return root.resolve()


# --- a scratch model folder for dashboard tests (engineers A and B) ------------------------------

SCRATCH_INPUT_SIZE = 96  # small inputs keep CAMs and predictions fast on two cores
SCRATCH_THRESHOLDS = {"default": 0.5, "XR_HUMERUS": 0.45, "XR_FOREARM": 0.55}


@pytest.fixture(scope="session")
def scratch_mura_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A miniature MURA v1.1 root of synthetic images (tests/fake_mura.py), 20 patients per type."""
    return make_fake_mura(tmp_path_factory.mktemp("scratch_mura"), patients_per_type=20, seed=7, size=(64, 56))


def _scratch_predictions(root: Path) -> pd.DataFrame:
    """Per-image predictions for the scratch root's valid split: probabilities that lean towards
    the label with noise, so there are confident hits, near misses and confidently wrong studies."""
    images = mura.read_images(root, "valid")
    rng = np.random.default_rng(11)
    logits = 1.2 * (2 * images["label"].to_numpy() - 1) + rng.normal(0.0, 2.0, len(images))
    return images.assign(probability=np.round(1 / (1 + np.exp(-logits)), 6))[PREDICTION_COLUMNS]


def _calibrated_random_model(images: list[np.ndarray]) -> nn.Module:
    """A random-init mobilenet_v2 whose outputs depend on the image.

    Untrained, its activations blow up layer after layer and saturate ReLU6, so every image gets
    the same probability and a flat CAM. Batch-norm statistics measured on sample images, and a
    head scaled to logits of mean 0 and s.d. 1.5 there, make predictions and CAMs vary by image.
    """
    torch.manual_seed(0)
    model = create_model("mobilenet_v2")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    batch = to_model_input(torch.stack([letterbox(p, SCRATCH_INPUT_SIZE)[0] for p in images]))
    with torch.no_grad():
        model.train()(batch)
        model.eval()
        head = model.classifier[1]
        head.weight.div_(model(batch).std() / 1.5)
        head.bias.sub_(model(batch).mean())
    return model


@pytest.fixture(scope="session")
def scratch_weights(tmp_path_factory: pytest.TempPathFactory, scratch_mura_root: Path) -> Path:
    """A weights folder holding one random-init (calibrated) mobilenet_v2 (96 px) named like the shipped model,
    with a model card, predictions_valid.csv (official paths of scratch_mura_root), metrics_valid.json
    (core.eval.metrics.summarise) and training_log.csv. Point MURA_LENS_WEIGHTS_DIR at it."""
    directory = tmp_path_factory.mktemp("scratch_weights")
    model_dir = directory / DEFAULT_MODEL
    model_dir.mkdir()
    predictions = _scratch_predictions(scratch_mura_root)
    noise = np.random.default_rng(0).integers(0, 256, size=(8, 80, 64), dtype=np.uint8)
    images = [load_radiograph(mura.image_file(scratch_mura_root, p)).pixels for p in predictions["path"]]
    save_checkpoint(
        model_dir / "checkpoint.pt", _calibrated_random_model(images + list(noise)), "mobilenet_v2", SCRATCH_INPUT_SIZE
    )
    card = {
        "name": DEFAULT_MODEL,
        "architecture": "mobilenet_v2",
        "description": "Scratch test model: random weights, not trained.",
        "input": f"{SCRATCH_INPUT_SIZE}x{SCRATCH_INPUT_SIZE} greyscale letterboxed, ImageNet normalisation",
        "output": "one logit; sigmoid = probability the radiograph is abnormal; study = mean of its views",
        "training_data": {
            "source": "none (test fixture); study types XR_HUMERUS, XR_FOREARM",
            "all": {
                t: {"images": int(len(g)), "studies": int(g["study_path"].nunique())}
                for t, g in predictions.groupby("study_type")
            },
        },
        "thresholds": SCRATCH_THRESHOLDS,
        "tta": False,
        "best_epoch": 2,
        "limitations": [
            "Random weights: for tests only.",
            "Trained only on humerus and forearm radiographs; other body parts are out of distribution.",
        ],
    }
    (model_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    predictions.to_csv(model_dir / "predictions_valid.csv", index=False)
    per_type = {t: v for t, v in SCRATCH_THRESHOLDS.items() if t != "default"}
    metrics = summarise(predictions, per_type, n_boot=50, seed=0)
    (model_dir / "metrics_valid.json").write_text(json.dumps(metrics, allow_nan=False))
    pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [0.62, 0.55, 0.51],
            "holdout_image_auroc": [0.70, 0.76, 0.75],
            "holdout_study_auroc": [0.72, 0.79, 0.78],
            "lr": [1e-4, 5e-5, 1e-5],
            "seconds": [10.0, 10.0, 10.0],
        }
    ).to_csv(model_dir / "training_log.csv", index=False)
    return directory


@pytest.fixture
def tiny_weights(tmp_path: Path, scratch_weights: Path) -> Path:
    """The scratch model's checkpoint and card alone (no cached evaluation) in a fresh weights folder."""
    model = tmp_path / "weights" / DEFAULT_MODEL
    model.mkdir(parents=True)
    for name in ("checkpoint.pt", "model_card.json"):
        shutil.copyfile(scratch_weights / DEFAULT_MODEL / name, model / name)
    return model.parent


@pytest.fixture(scope="session")
def scratch_weights_dir(scratch_weights: Path) -> Path:
    """The same folder as scratch_weights, under the name the security tests use."""
    return scratch_weights


@pytest.fixture
def use_scratch_weights(monkeypatch: pytest.MonkeyPatch, scratch_weights: Path) -> Path:
    """Point the app at scratch_weights and start with no MURA folder (tests set one when needed)."""
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(scratch_weights))
    monkeypatch.delenv("MURA_ROOT", raising=False)
    monkeypatch.delenv(mura.LOCK_ENV, raising=False)  # the sidebar's folder box is under test
    return scratch_weights


# --- a running dashboard for the browser, security and load tests (tests/server.py) ---------------


@pytest.fixture(scope="session")
def dashboard_server(scratch_weights: Path) -> Iterator[RunningDashboard]:
    """The deployed command (Procfile) on a free loopback port, serving scratch_weights with no MURA
    folder; one server for the whole session, stopped (process group) at its end."""
    with running_dashboard({"MURA_LENS_WEIGHTS_DIR": str(scratch_weights)}) as server:
        yield server


# --- test-file order for `make test` (pytest -n 2 --dist loadfile) --------------------------------

#: The longest test files, longest first (each ~1-4 min on two shared cores). `--dist loadfile` runs a
#: whole file on one worker, and pytest-xdist by default queues files by test count, which put these
#: files (few tests, each slow) last, where one of them ran alone while the other worker sat idle.
#: Queued first instead, the many short files fill in behind them and both workers end together.
#: Only an ordering hint: a file not listed runs after these, in collection order.
LONGEST_FILES_FIRST = (
    "test_train_evaluate_predict.py",
    "test_browser.py",
    "test_app_explain.py",
    "test_hardening.py",
    "test_scale.py",
    "test_scope.py",
    "test_embeddings.py",
    "test_browser_data_map.py",
    "test_app_error_card.py",
    "test_security.py",
    "test_browser_trust.py",
    "test_deploy.py",
    "test_shipped_model.py",
    "test_app_data_folder.py",
    "test_load.py",
    "test_localize.py",
    "test_app_trust.py",
)


def pytest_configure(config: pytest.Config) -> None:
    # Keep the order below when xdist distributes files (its default reorders them by test count).
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
