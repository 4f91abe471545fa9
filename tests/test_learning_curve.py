"""scripts/learning_curve.py on synthetic cross-validation folders (no training, no MURA)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.store.artifacts import CARD_FILE, ModelArtifacts

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "learning_curve.py"
spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
learning_curve = importlib.util.module_from_spec(spec)
spec.loader.exec_module(learning_curve)

FOLDS = 2
STUDIES_PER_FOLD = 60


def _write_cv(runs: Path, name: str, fitted_images: int, separation: float, folds: int = FOLDS) -> None:
    """Folds of one-view studies whose probabilities separate the classes by ``separation``."""
    rng = np.random.default_rng(0)  # the same noise for every fraction: only the separation differs
    for fold in range(folds):
        out = runs / f"{name}_f{fold}"
        out.mkdir(parents=True)
        rows = []
        for study_type in ("XR_HUMERUS", "XR_FOREARM"):
            for k in range(STUDIES_PER_FOLD):
                label = k % 2
                outcome = "positive" if label else "negative"
                study = f"MURA-v1.1/train/{study_type}/patient{fold}{k:03d}/study1_{outcome}/"
                probability = 1 / (1 + np.exp(-(separation * (label - 0.5) + rng.normal())))
                rows.append(
                    {
                        "path": study + "image1.png",
                        "study_type": study_type,
                        "patient": f"patient{fold}{k:03d}",
                        "study": "study1",
                        "study_path": study,
                        "label": label,
                        "probability": probability,
                    }
                )
        pd.DataFrame(rows).to_csv(ModelArtifacts(out).holdout_predictions, index=False)
        fit = {
            t: {"images": fitted_images, "studies": fitted_images, "patients": fitted_images, "abnormal_images": 0}
            for t in ("XR_HUMERUS", "XR_FOREARM")
        }
        recipe = {"folds": FOLDS, "fold": fold, "split_seed": 0, "epochs": 4}
        (out / CARD_FILE).write_text(json.dumps({"training_data": {"fit": fit}, "best_epoch": 3, "recipe": recipe}))


def test_power_law_recovers_its_exponent() -> None:
    images = np.array([250.0, 500.0, 1000.0, 2000.0])
    c, alpha = learning_curve.power_law(images, 1 - 2.0 * images**-0.4)
    assert (c, alpha) == (pytest.approx(2.0), pytest.approx(0.4))
    assert learning_curve.images_for(1 - 2.0 * 4000.0**-0.4, c, alpha) == pytest.approx(4000.0)
    assert learning_curve.images_for(0.95, c, -0.1) == float("inf")
    with pytest.raises(ValueError, match="different"):
        learning_curve.power_law(np.array([500.0, 500.0]), np.array([0.8, 0.9]))


def test_curve_scores_every_fraction_on_the_same_studies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_cv(tmp_path, "small", 100, separation=0.5)
    _write_cv(tmp_path, "large", 400, separation=1.5)
    assert (
        learning_curve.main(
            [
                "--runs",
                str(tmp_path),
                "--n-boot",
                "100",
                "--json",
                str(tmp_path / "curve.json"),
                "0.25=small",
                "1=large",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "curve.json").read_text())
    for part in result["body_parts"].values():
        small, large = part["points"]
        assert small["studies"] == large["studies"] == FOLDS * STUDIES_PER_FOLD
        assert small["fitted_images"] == 100 and large["fitted_images"] == 400
        assert small["study_auroc"] < large["study_auroc"]
        assert small["ci95"][0] <= small["study_auroc"] <= small["ci95"][1]
        assert small["largest_minus_this"][0] == pytest.approx(large["study_auroc"] - small["study_auroc"], abs=1e-3)
        assert small["best_epochs"] == ["3/4", "3/4"]
        assert part["power_law"]["alpha"] > 0 and part["images_for_target"] > 400
    assert "XR_HUMERUS: power law alpha" in capsys.readouterr().out


def test_missing_or_unfinished_folds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="finished cross-validation"):
        learning_curve.main(["--runs", str(tmp_path), "0.5=absent", "1=absent_too"])
    _write_cv(tmp_path, "whole", 400, separation=1.5)
    _write_cv(tmp_path, "partial", 100, separation=0.5, folds=1)  # fold 1 still training
    with pytest.raises(SystemExit, match="fold 1 of partial has not finished"):
        learning_curve.main(["--runs", str(tmp_path), "0.25=partial", "1=whole"])


def test_cross_validations_of_different_splits_are_refused(tmp_path: Path) -> None:
    _write_cv(tmp_path, "whole", 400, separation=1.5)
    _write_cv(tmp_path, "other", 100, separation=0.5)
    predictions = ModelArtifacts(tmp_path / "other_f1").holdout_predictions
    frame = pd.read_csv(predictions)
    pd.concat([frame, frame.head(1).assign(study_path="elsewhere/", path="elsewhere/image1.png")]).to_csv(
        predictions, index=False
    )
    with pytest.raises(SystemExit, match="different studies"):
        learning_curve.main(["--runs", str(tmp_path), "0.25=other", "1=whole"])
