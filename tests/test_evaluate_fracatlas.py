"""core.evaluate --dataset fracatlas: external validation against FracAtlas's fracture labels, on a
synthetic root and on a few real images copied from ../shared/fracatlas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import evaluate as evaluate_cli
from core.data import fracatlas
from core.data.imaging import load_radiograph
from core.eval import evaluation as evaluation_lib
from core.model.checkpoint import DEFAULT_MODEL, load_model
from core.model.prediction import predict_images
from core.store.artifacts import ModelArtifacts, read_evaluation
from tests.fake_fracatlas import FAKE_ROWS, make_fake_fracatlas

SHARED_FRACATLAS = Path(__file__).resolve().parents[2] / "shared" / "fracatlas"


@pytest.fixture
def model_weights(tmp_path: Path, scratch_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the scratch model (checkpoint and card) that evaluations may write into."""
    directory = tmp_path / "weights"
    (directory / DEFAULT_MODEL).mkdir(parents=True)
    for name in ("checkpoint.pt", "model_card.json"):
        shutil.copy(scratch_weights / DEFAULT_MODEL / name, directory / DEFAULT_MODEL / name)
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(directory))
    return directory


def _evaluate(root: Path) -> int:
    return evaluate_cli.main(
        ["--dataset", "fracatlas", "--root", str(root), "--model", DEFAULT_MODEL, "--bootstrap", "30", "--threads", "1"]
    )


def test_fracatlas_evaluation_on_a_synthetic_root(tmp_path: Path, model_weights: Path) -> None:
    root = make_fake_fracatlas(tmp_path / "fa")
    assert _evaluate(root) == 0
    files = ModelArtifacts.of(DEFAULT_MODEL)
    evaluation = read_evaluation(files, "fracatlas")
    predictions, metrics = evaluation.predictions, evaluation.metrics
    assert list(predictions.columns) == evaluation_lib.FRACATLAS_COLUMNS
    assert len(predictions) == len(FAKE_ROWS)
    # Each region is judged at the card's threshold named for it; leg/hip at none.
    card = json.loads(files.card.read_text())["thresholds"]
    by_region = predictions.groupby("region")["threshold"].first()
    assert by_region["hand"] == card["XR_FOREARM"] and by_region["shoulder"] == card["XR_HUMERUS"]
    assert by_region["hand+shoulder"] == card["default"] and np.isnan(by_region["leg/hip"])
    # The cached probability is what the model gives for that file (evaluate runs ONNX Runtime, which matches
    # torch within 1e-4: the rule core.model.backends was adopted under).
    loaded = load_model(DEFAULT_MODEL)
    first = predictions.iloc[0]
    pixels = load_radiograph(fracatlas.image_file(root, first["file"])).pixels
    assert predict_images(loaded, [pixels])[0] == pytest.approx(first["probability"], abs=1e-4)
    # Upper limb only, hardware apart, copies of one radiograph resampled as one.
    upper = predictions[predictions["region"] != "leg/hip"]
    overall = metrics["all"]["overall"]
    assert overall["n"] == len(upper) and overall["n_abnormal"] == int(upper["fractured"].sum())
    assert overall["n_studies"] == len(upper) - 1  # the last two files are one radiograph
    assert metrics["hardware"]["overall"]["n"] == int(upper["hardware"].sum())
    assert metrics["without_hardware"]["overall"]["n"] == int((upper["hardware"] == 0).sum())
    assert set(metrics["all"]) == {"overall", "hand", "shoulder", "hand+shoulder"}
    from sklearn.metrics import roc_auc_score

    assert overall["auroc"]["point"] == pytest.approx(roc_auc_score(upper["fractured"], upper["probability"]))
    leg = metrics["out_of_scope"]["leg/hip"]
    assert leg["n"] == 3 and leg["n_fractured"] == 1 and "auroc" not in leg
    assert metrics["evaluation"]["duplicate_copies"] == 1


def test_fracatlas_needs_a_root_and_refuses_a_bad_one(
    tmp_path: Path, model_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        evaluate_cli.main(["--dataset", "fracatlas", "--model", DEFAULT_MODEL])
    assert "--root" in capsys.readouterr().err
    assert _evaluate(tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "labels.csv" in err and len(err.splitlines()) == 1
    assert not ModelArtifacts.of(DEFAULT_MODEL).predictions("fracatlas").exists()


def test_mura_still_needs_its_root(model_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        evaluate_cli.main(["--split", "valid", "--model", DEFAULT_MODEL])
    assert "--mura-root" in capsys.readouterr().err


def test_summary_keeps_hardware_apart_and_leg_out_of_scope() -> None:
    rows = pd.DataFrame(
        {
            "file": [f"f{i}" for i in range(8)],
            "region": ["hand"] * 6 + ["leg/hip"] * 2,
            "upper_limb": [True] * 6 + [False] * 2,
            "fractured": [1, 1, 0, 0, 0, 1, 1, 0],
            "hardware": [0, 0, 0, 0, 1, 1, 0, 0],
            "probability": [0.9, 0.7, 0.2, 0.6, 0.95, 0.8, 0.5, 0.1],
        }
    )
    rows["duplicate_of"] = rows["file"]
    summary = evaluation_lib.summarise_fracatlas(rows, {"hand": 0.5, "shoulder": 0.5, "hand+shoulder": 0.5}, n_boot=20)
    assert summary["label"] == "fracture"
    # Without hardware: fractures 0.9, 0.7 above every non-fracture (0.2, 0.6): AUROC 1.
    assert summary["without_hardware"]["overall"]["auroc"]["point"] == 1.0
    # The hardware image without a fracture (0.95) is called abnormal: specificity 0 in that stratum.
    assert summary["hardware"]["overall"]["specificity"]["point"] == 0.0
    assert summary["all"]["overall"]["n"] == 6
    assert summary["out_of_scope"]["leg/hip"]["share_called_abnormal"] == 0.5


@pytest.mark.skipif(
    not (SHARED_FRACATLAS / "labels.csv").is_file(),
    reason="no FracAtlas copy at ../shared/fracatlas (the real-image check needs it)",
)
def test_fracatlas_evaluation_on_real_images(tmp_path: Path, model_weights: Path) -> None:
    """A copy of a few real rows (both labels, hand and leg/hip) is a FracAtlas root of its own."""
    labels = pd.read_csv(SHARED_FRACATLAS / "labels.csv")
    present = labels[[(SHARED_FRACATLAS / f).is_file() for f in labels["file"]]]
    picked = pd.concat(
        [
            present[(present["region"] == "hand") & (present["fractured"] == 1)].head(3),
            present[(present["region"] == "hand") & (present["fractured"] == 0)].head(3),
            present[present["region"] == "leg/hip"].head(1),
        ]
    )
    root = tmp_path / "real"
    (root / "images").mkdir(parents=True)
    for file in picked["file"]:
        shutil.copy(SHARED_FRACATLAS / file, root / file)
    picked.to_csv(root / "labels.csv", index=False)
    assert _evaluate(root) == 0
    evaluation = read_evaluation(ModelArtifacts.of(DEFAULT_MODEL), "fracatlas")
    assert evaluation.predictions["file"].tolist() == picked["file"].tolist()
    assert evaluation.predictions["probability"].between(0, 1).all()
    assert evaluation.metrics["all"]["hand"]["n"] == 6
    assert evaluation.metrics["out_of_scope"]["leg/hip"]["n"] == 1


def test_shipped_fracatlas_caches_agree_with_their_rows() -> None:
    """Each committed FracAtlas cache is one run (hash), its AUROC is its rows' AUROC, every region is
    judged at the card's threshold for it, and it covers the shipped samples (Browse reads them there)."""
    from sklearn.metrics import roc_auc_score

    from core.store.artifacts import SHIPPED_WEIGHTS_DIR
    from dashboard.studies import FRACATLAS_SAMPLES_DIR

    shipped = [
        ModelArtifacts(d) for d in sorted(SHIPPED_WEIGHTS_DIR.iterdir()) if (d / "metrics_fracatlas.json").exists()
    ]
    assert shipped, "no shipped model has a FracAtlas evaluation"
    samples = set(fracatlas.read_images(fracatlas.resolve_root(FRACATLAS_SAMPLES_DIR))["file"])
    for files in shipped:
        evaluation = read_evaluation(files, "fracatlas")
        predictions, metrics = evaluation.predictions, evaluation.metrics
        upper = predictions[predictions["upper_limb"].astype(bool)]
        assert metrics["all"]["overall"]["auroc"]["point"] == pytest.approx(
            roc_auc_score(upper["fractured"], upper["probability"])
        )
        expected = upper["region"].map(evaluation_lib.region_thresholds(json.loads(files.card.read_text())))
        assert np.allclose(upper["threshold"], expected)
        assert samples <= set(predictions["file"])
