"""core.compare: paired bootstrap of the AUROC difference between two models' cached predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from core import compare as compare_cli
from core.eval import comparison as compare
from core.eval.metrics import MetricsInputError, bootstrap_ci, study_table


def _predictions(probabilities: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Two views per study, humerus then forearm, official-looking paths."""
    rows = []
    for i, (probability, label) in enumerate(zip(probabilities, labels, strict=True)):
        study_type = "XR_HUMERUS" if i % 2 else "XR_FOREARM"
        study_path = f"MURA-v1.1/valid/{study_type}/patient{i:05d}/study1_{'positive' if label else 'negative'}/"
        for view in (1, 2):
            rows.append(
                {
                    "path": f"{study_path}image{view}.png",
                    "study_type": study_type,
                    "patient": f"patient{i:05d}",
                    "study": "study1",
                    "study_path": study_path,
                    "label": int(label),
                    "probability": probability,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture()
def two_models(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1], 40)
    sharp = np.clip(labels * 0.6 + rng.uniform(0, 0.4, labels.size), 0, 1)  # separates the classes
    vague = rng.uniform(0, 1, labels.size)  # does not
    for name, probabilities in (("sharp", sharp), ("vague", vague)):
        (tmp_path / name).mkdir()
        _predictions(probabilities, labels).to_csv(tmp_path / name / "predictions_valid.csv", index=False)
    return tmp_path


def test_a_model_compared_with_itself_differs_by_exactly_zero(two_models: Path) -> None:
    studies = study_table(pd.read_csv(two_models / "sharp" / "predictions_valid.csv"))
    interval = compare.paired_auroc_difference(studies, studies, n_boot=200)
    assert (interval.point, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_a_better_model_has_an_interval_above_zero(two_models: Path) -> None:
    report = compare.compare_models("sharp", "vague", n_boot=300, directory=two_models)
    assert set(report) == {"overall", "XR_HUMERUS", "XR_FOREARM"}
    overall = report["overall"]
    assert overall["studies"] == 80 and overall["auroc_a"] == 1.0
    assert overall["difference"]["point"] == pytest.approx(overall["auroc_a"] - overall["auroc_b"])
    assert overall["difference"]["low"] > 0
    flipped = compare.compare_models("vague", "sharp", n_boot=300, directory=two_models)["overall"]["difference"]
    assert flipped["point"] == pytest.approx(-overall["difference"]["point"])


def test_only_shared_studies_are_compared(two_models: Path) -> None:
    vague = pd.read_csv(two_models / "vague" / "predictions_valid.csv")
    vague.iloc[: len(vague) // 2].to_csv(two_models / "vague" / "predictions_valid.csv", index=False)
    assert compare.compare_models("sharp", "vague", n_boot=50, directory=two_models)["overall"]["studies"] == 40


def test_disagreeing_labels_are_refused(two_models: Path) -> None:
    studies = study_table(pd.read_csv(two_models / "sharp" / "predictions_valid.csv"))
    with pytest.raises(MetricsInputError, match="label"):
        compare.paired_auroc_difference(studies, studies.assign(label=1 - studies["label"]), n_boot=10)


def test_cli_missing_predictions_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tmp_path))
    assert compare_cli.main(["--models", "a", "b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no cached predictions") and err.count("\n") == 1


def test_the_vectorised_bootstrap_draws_and_scores_like_core_metrics(two_models: Path) -> None:
    """Every resample's two AUROCs at once (ranks) give the interval of core.eval.metrics' one-resample-at-a-time loop,
    ties included (rounded probabilities make many: where a rank formula could part from sklearn)."""
    a, b = (
        study_table(pd.read_csv(two_models / name / "predictions_valid.csv")).round({"probability": 1})
        for name in ("sharp", "vague")
    )

    def difference(table: pd.DataFrame) -> float:
        labels = table["label"]
        return roc_auc_score(labels, table["probability"]) - roc_auc_score(labels, table["probability_b"])

    expected = bootstrap_ci(compare.paired_studies(a, b), difference, n_boot=200, seed=0, level="image")
    vectorised = compare.paired_auroc_difference(a, b, n_boot=200)
    assert vectorised.n_skipped == expected.n_skipped
    assert tuple(vectorised) == pytest.approx(tuple(expected), abs=1e-12)


def test_the_mean_over_body_parts_is_the_adoption_rules_statistic() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 160)
    a = study_table(_predictions(np.clip(labels * 0.5 + rng.uniform(0, 0.5, labels.size), 0, 1), labels))
    b = study_table(_predictions(rng.uniform(0, 1, labels.size), labels))
    result = compare.paired_mean_difference(a, b, n_boot=300)
    per_part = [
        roc_auc_score(a.loc[a.study_type == t, "label"], a.loc[a.study_type == t, "probability"])
        - roc_auc_score(b.loc[b.study_type == t, "label"], b.loc[b.study_type == t, "probability"])
        for t in ("XR_HUMERUS", "XR_FOREARM")
    ]
    assert result.point == pytest.approx(np.mean(per_part))
    assert 0 < result.low < result.point < result.high
    same = compare.paired_mean_difference(a, a, n_boot=50)
    assert (same.point, same.low, same.high) == (0.0, 0.0, 0.0)
