"""core.train, core.evaluate and core.predict end to end on a synthetic MURA-layout root.

A tiny model (random init, 32 px) is trained for two epochs on generated images, so these tests
exercise the real command-line entry points in seconds without the real data.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from core import evaluate as evaluate_cli
from core import predict as predict_cli
from core import train as train_cli
from core.data import mura
from core.data.splits import patient_split, patient_subset
from core.eval import evaluation
from core.model import training
from core.model.card import read_card, subset_counts
from core.model.checkpoint import load_model
from core.model.prediction import predict_images, predict_study, study_probability
from core.model.registry import create_model
from core.model.thresholds import choose_threshold, holdout_summary
from core.store.artifacts import (
    CARD_FILE,
    CHECKPOINT_FILE,
    TRAIN_STATE_FILE,
    TRAINING_LOG_FILE,
    ModelArtifacts,
    read_evaluation,
)
from tests.fake_fracatlas import FAKE_ROWS, make_fake_fracatlas
from tests.fake_mura import make_fake_mura

pytestmark = pytest.mark.slow  # trains, evaluates and predicts through the CLIs, some in subprocesses

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--arch",
    "mobilenet_v2",
    "--input-size",
    "32",
    "--batch-size",
    "8",
    "--no-pretrained",
    "--no-bf16",
    "--threads",
    "1",
    "--holdout-fraction",
    "0.3",
]


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_mura(tmp_path_factory.mktemp("mura"), patients_per_type=8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, fake_root: Path) -> Path:
    directory = tmp_path_factory.mktemp("weights")
    code = train_cli.main(["--mura-root", str(fake_root), "--out", str(directory / "tiny"), "--epochs", "2", *TINY])
    assert code == 0
    return directory


def test_training_writes_checkpoint_card_and_log(weights: Path) -> None:
    out = weights / "tiny"
    log = pd.read_csv(out / TRAINING_LOG_FILE)
    assert list(log["epoch"]) == [1, 2]
    assert {"train_loss", "holdout_image_auroc", "holdout_study_auroc"} <= set(log.columns)
    card = json.loads((out / "model_card.json").read_text())
    assert card["architecture"] == "mobilenet_v2" and card["initialisation"] == "random"
    assert set(card["thresholds"]) == {"default", "XR_HUMERUS", "XR_FOREARM"}
    assert card["tta"] is True
    assert next(iter(card)) == "schema_version" and read_card(out / CARD_FILE) == card
    holdout = set(card["training_data"]["holdout"])
    assert holdout <= {"XR_HUMERUS", "XR_FOREARM"}
    loaded = load_model("tiny", directory=weights)
    assert loaded.input_size == 32


def test_patient_split_never_shares_a_patient(fake_root: Path) -> None:
    from core.data import mura

    images = mura.read_images(fake_root, "train")
    fit, holdout = patient_split(images, 0.3, seed=0)
    assert not set(images.iloc[fit]["patient"]) & set(images.iloc[holdout]["patient"])
    again = patient_split(images, 0.3, seed=0)
    assert (again[1] == holdout).all()


def test_k_fold_split_covers_every_patient_once(fake_root: Path) -> None:
    from core.data import mura

    images = mura.read_images(fake_root, "train")
    holdouts = [patient_split(images, 0.3, seed=3, folds=4, fold=k)[1] for k in range(4)]
    patients = [set(images.iloc[h]["patient"]) for h in holdouts]
    assert sum(len(p) for p in patients) == images["patient"].nunique() == len(set().union(*patients))
    fit, holdout = patient_split(images, 0.3, seed=3, folds=4, fold=1)
    assert not set(images.iloc[fit]["patient"]) & set(images.iloc[holdout]["patient"])
    assert len(fit) + len(holdout) == len(images)
    with pytest.raises(ValueError, match="fold"):
        patient_split(images, 0.3, seed=3, folds=4, fold=4)


def test_patient_subset_keeps_patients_whole_and_nests(fake_root: Path) -> None:
    from core.data import mura

    images = mura.read_images(fake_root, "train")
    fit, _ = patient_split(images, 0.3, seed=0)
    quarter, half = (patient_subset(images, fit, f, seed=5) for f in (0.25, 0.5))
    assert set(quarter) < set(half) < set(fit)
    patient_of = images["patient"].to_numpy()
    for subset in (quarter, half):
        kept = set(patient_of[subset])
        assert set(subset) == {i for i in fit if patient_of[i] in kept}  # every image of a kept patient
    assert len(set(patient_of[half])) == round(0.5 * len(set(patient_of[fit])))
    assert (patient_subset(images, fit, 1.0, seed=5) == fit).all()
    with pytest.raises(ValueError, match="fraction"):
        patient_subset(images, fit, 0.0, seed=5)


def test_training_on_a_fraction_keeps_the_holdout(weights: Path, fake_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "half"
    assert (
        train_cli.main(
            ["--mura-root", str(fake_root), "--out", str(out), "--epochs", "1", *TINY, "--train-fraction", "0.5"]
        )
        == 0
    )
    half = json.loads((out / "model_card.json").read_text())["training_data"]
    whole = json.loads((weights / "tiny" / "model_card.json").read_text())["training_data"]
    assert half["holdout"] == whole["holdout"]
    for study_type, counts in whole["fit"].items():
        assert 0 < half["fit"][study_type]["patients"] < counts["patients"]
    assert "fitted on 50% of the other patients" in half["split"]


def test_a_state_saved_before_a_setting_existed_still_resumes(
    fake_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "old"
    arguments = ["--mura-root", str(fake_root), "--out", str(out), "--epochs", "1", *TINY]
    assert train_cli.main(arguments) == 0
    state_path = out / TRAIN_STATE_FILE
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    state["config"] = json.loads(state["config"])  # a plain dict, as states were written before
    del state["config"]["train_fraction"]  # as written before --train-fraction existed
    torch.save(state, state_path)
    capsys.readouterr()
    assert train_cli.main(arguments) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out


class _Payload:
    """What a planted state could carry: unpickling it calls os.mkdir (any code could run there)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def test_a_planted_state_with_a_pickle_payload_is_one_sentence_and_never_runs(
    fake_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resume is automatic, so a train_state.pt planted in --out is read with weights_only=True."""
    out = tmp_path / "planted"
    arguments = ["--mura-root", str(fake_root), "--out", str(out), "--epochs", "1", *TINY]
    assert train_cli.main(arguments) == 0
    state_path = out / TRAIN_STATE_FILE
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    assert isinstance(state["config"], str) and isinstance(state["python_rng"][1], list)  # plain values only
    marker = tmp_path / "payload_ran"
    torch.save({**state, "elapsed": _Payload(marker)}, state_path)
    capsys.readouterr()
    assert train_cli.main(arguments) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {state_path} is not a training state")
    assert errors[0].endswith("use a new --out")
    assert not marker.exists()


def test_resuming_with_another_recipe_is_one_line_and_status_2(
    fake_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """core.train raises TrainingError, not SystemExit: the CLI turns it into one line and exit status 2."""
    out = tmp_path / "changed"
    assert train_cli.main(["--mura-root", str(fake_root), "--out", str(out), "--epochs", "1", *TINY]) == 0
    capsys.readouterr()
    config = training.TrainConfig(
        mura_root=str(fake_root),
        arch="mobilenet_v2",
        out=str(out),
        epochs=1,
        input_size=32,
        max_lr=0.5,
        pretrained=False,
        bf16=False,
        threads=1,
    )
    with pytest.raises(training.TrainingError, match="other settings"):
        training.train(config)
    assert (
        train_cli.main(["--mura-root", str(fake_root), "--out", str(out), "--epochs", "1", *TINY, "--max-lr", "0.5"])
        == 2
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [f"error: {out / TRAIN_STATE_FILE} was written with other settings; use a new --out"]


def test_study_batches_keep_every_study_whole() -> None:
    studies = [f"s{i // 3 if i < 30 else i}" for i in range(45)]  # 10 studies of 3 views, 15 of 1
    batches = training.study_batches(studies, 8, torch.Generator().manual_seed(0))
    rows = [row for batch in batches for row in batch]
    assert sorted(rows) == list(range(45))
    for batch in batches:
        assert 2 <= len(batch) <= 8
        for row in batch:
            assert all(other in batch for other in range(45) if studies[other] == studies[row])
    # The plan depends on the generator alone, so a resumed run draws the same one.
    assert batches == training.study_batches(studies, 8, torch.Generator().manual_seed(0))


def test_study_loss_is_weighted_bce_on_mean_view_probabilities() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0])
    codes = torch.tensor([7, 7, 3, 7])  # study 7 has views 0, 1, 3; study 3 has view 2
    targets = torch.tensor([1.0, 1.0, 0.0, 1.0])
    weights = torch.tensor([0.4, 0.4, 0.6, 0.4])
    p7 = torch.sigmoid(logits[[0, 1, 3]]).mean()
    p3 = torch.sigmoid(logits[2])
    expected = -(0.4 * torch.log(p7) + 0.6 * torch.log(1 - p3)) / 2
    torch.testing.assert_close(training._study_loss(logits, targets, weights, codes), expected)


def test_training_with_the_study_loss(fake_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    assert (
        train_cli.main(["--mura-root", str(fake_root), "--out", str(out), "--epochs", "2", *TINY, "--study-loss"]) == 0
    )
    card = json.loads((out / "model_card.json").read_text())
    assert card["recipe"]["study_loss"] is True
    assert card["recipe"]["loss"].startswith("BCE on each study's mean view probability")
    assert list(pd.read_csv(out / TRAINING_LOG_FILE)["epoch"]) == [1, 2]


def test_threshold_maximises_kappa() -> None:
    # At 0.3 one normal is called abnormal (kappa 0.714); at 0.8 one abnormal is missed (kappa 0.75).
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    probabilities = np.array([0.1, 0.2, 0.7, 0.3, 0.8, 0.85, 0.9, 0.95])
    assert choose_threshold(labels, probabilities) == pytest.approx(0.8)
    separable = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.95])
    assert 0.3 < choose_threshold(labels, separable) <= 0.6


def test_interrupted_training_resumes_from_its_last_epoch(
    tmp_path: Path, fake_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    arguments = ["--mura-root", str(fake_root), "--out", str(out), "--epochs", "3", *TINY]
    # The kill needs a real process; the resumed run goes in-process (main(argv), one torch import less).
    process = subprocess.Popen(
        [sys.executable, "-m", "core.train", *arguments],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    state = out / TRAIN_STATE_FILE
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert state.exists(), "no state was written before the kill"
    finished_epochs = len(pd.read_csv(out / TRAINING_LOG_FILE))
    assert not list(out.glob("*.tmp")) or all(p.stat().st_size >= 0 for p in out.glob("*.tmp"))
    capsys.readouterr()
    assert train_cli.main(arguments) == 0
    assert "resuming after epoch" in capsys.readouterr().out
    log = pd.read_csv(out / TRAINING_LOG_FILE)
    assert list(log["epoch"]) == [1, 2, 3]
    assert finished_epochs >= 1
    # A resumed run continues every random stream (augmentation draws, permutations, dropout):
    # it ends with the weights of a run that was never stopped.
    straight = tmp_path / "straight"
    assert train_cli.main(["--mura-root", str(fake_root), "--out", str(straight), "--epochs", "3", *TINY]) == 0
    _assert_same_weights(out / TRAIN_STATE_FILE, straight / TRAIN_STATE_FILE, key="model")


def _assert_same_weights(first: Path, second: Path, key: str) -> None:
    a, b = (torch.load(path, map_location="cpu", weights_only=True)[key] for path in (first, second))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=0, rtol=0, msg=name)


def test_augmentation_workers_do_not_change_what_is_trained(weights: Path, fake_root: Path, tmp_path: Path) -> None:
    # The draws are made in the training process; DataLoader workers only apply them.
    out = tmp_path / "workers"
    assert (
        train_cli.main(["--mura-root", str(fake_root), "--out", str(out), "--epochs", "2", *TINY, "--workers", "2"])
        == 0
    )
    _assert_same_weights(out / CHECKPOINT_FILE, weights / "tiny" / CHECKPOINT_FILE, key="state_dict")


def test_evaluate_writes_predictions_and_metrics(
    weights: Path, fake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    code = evaluate_cli.main(
        ["--mura-root", str(fake_root), "--split", "valid", "--model", "tiny", "--n-boot", "50", "--threads", "1"]
    )
    assert code == 0
    predictions = pd.read_csv(weights / "tiny" / "predictions_valid.csv")
    assert set(evaluation.PREDICTION_COLUMNS) <= set(predictions.columns)
    assert predictions["path"].str.startswith("MURA-v1.1/valid/").all()
    metrics = json.loads((weights / "tiny" / "metrics_valid.json").read_text())
    assert metrics["evaluation"]["images"] == len(predictions)
    assert metrics["n_boot"] == 50
    # The cached probabilities are what the model gives for those files (within 1e-4: evaluate runs ONNX
    # Runtime, predict_images torch; core.model.backends was adopted under that rule).
    loaded = load_model("tiny", directory=weights)
    first = predictions.iloc[0]
    from core.data.imaging import load_radiograph
    from core.data.mura import image_file

    pixels = load_radiograph(image_file(fake_root, first["path"])).pixels
    assert predict_images(loaded, [pixels])[0] == pytest.approx(first["probability"], abs=1e-4)
    if predictions["label"].nunique() == 2:
        auroc = roc_auc_score(predictions["label"], predictions["probability"])
        assert metrics["image"]["overall"]["auroc"]["point"] == pytest.approx(auroc, abs=1e-4)


def test_evaluate_failure_leaves_previous_results_intact(
    weights: Path, fake_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    target = weights / "tiny" / "metrics_valid.json"
    target.write_text('{"previous": true}')
    broken = fake_root.parent / "broken"
    broken.mkdir(exist_ok=True)
    code = evaluate_cli.main(["--mura-root", str(broken), "--split", "valid", "--model", "tiny"])
    assert code == 2
    assert json.loads(target.read_text()) == {"previous": True}


@pytest.fixture
def evaluated_copy(weights: Path, fake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelArtifacts:
    """A private copy of the tiny model with a cached evaluation of fake_root's valid split."""
    shutil.copytree(weights / "tiny", tmp_path / "tiny")
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tmp_path))
    files = ModelArtifacts(tmp_path / "tiny")
    if not files.predictions("valid").is_file():
        assert (
            evaluate_cli.main(["--mura-root", str(fake_root), "--model", "tiny", "--n-boot", "10", "--threads", "1"])
            == 0
        )
    return files


def test_evaluate_refuses_to_shrink_a_cached_evaluation_without_force(
    evaluated_copy: ModelArtifacts, fake_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A partial MURA copy must not silently replace the full cache (issue 19 item 6)."""
    partial = make_fake_mura(tmp_path / "partial", patients_per_type=8, missing=10)  # fake_root, 10 images short
    before = evaluated_copy.predictions("valid").read_bytes()
    code = evaluate_cli.main(["--mura-root", str(partial), "--model", "tiny", "--threads", "1"])
    assert code == 2
    error = capsys.readouterr().err
    assert "tiny/predictions_valid.csv holds" in error and "pass --force" in error
    assert evaluated_copy.predictions("valid").read_bytes() == before
    # --bootstrap is the flag's older name, still accepted.
    assert (
        evaluate_cli.main(
            ["--mura-root", str(partial), "--model", "tiny", "--threads", "1", "--force", "--bootstrap", "20"]
        )
        == 0
    )
    evaluation = read_evaluation(evaluated_copy, "valid")
    assert evaluation.metrics["n_boot"] == 20
    assert len(evaluation.predictions) == len(mura.read_images(partial, "valid")) < len(pd.read_csv(io.BytesIO(before)))


def test_evaluate_on_a_full_disk_names_the_file_and_leaves_no_temporary(
    evaluated_copy: ModelArtifacts, fake_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    before = {
        path: path.read_bytes() for path in (evaluated_copy.predictions("valid"), evaluated_copy.metrics("valid"))
    }

    def disk_full(self: Path, *args: object, **kwargs: object) -> None:
        self.touch()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    code = evaluate_cli.main(["--mura-root", str(fake_root), "--model", "tiny", "--n-boot", "10", "--threads", "1"])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == f"error: Cannot write {evaluated_copy.predictions('valid')}: No space left on device."
    assert not list(evaluated_copy.directory.glob("*.tmp"))
    assert {path: path.read_bytes() for path in before} == before


def test_study_probability_is_the_mean_of_views(weights: Path) -> None:
    loaded = load_model("tiny", directory=weights)
    rng = np.random.default_rng(1)
    views = [rng.integers(0, 255, size=(40, 30), dtype=np.uint8) for _ in range(3)]
    study = predict_study(loaded, views, study_type="XR_HUMERUS")
    assert study.probability == pytest.approx(float(np.mean(study.view_probabilities)))
    assert study.threshold == loaded.threshold_for("XR_HUMERUS")
    assert study.verdict == ("abnormal" if study.probability >= study.threshold else "normal")
    batched = predict_images(loaded, views, batch_size=2)
    single = np.array([predict_images(loaded, [v])[0] for v in views])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    with pytest.raises(ValueError):
        study_probability([])


@pytest.fixture
def run_predict(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``python -m core.predict`` in this process (main(argv)): its exit status, stdout and stderr.

    The real subprocess, exit status and byte-level stdio of the same entry point are checked by
    tests/test_hardening.py (the whole bad-input corpus in one `python -m core.predict` run);
    here each call saves a torch import (~10 s on two busy cores).
    """

    def run(weights: Path, *args: str, model: str = "tiny") -> subprocess.CompletedProcess[str]:
        monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
        capsys.readouterr()
        argv = ["--model", model, "--threads", "1", *args]
        code = predict_cli.main(argv)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["core.predict", *argv], code, out, err)

    return run


def test_predict_cli_prints_json_per_file_and_study(weights: Path, tmp_path: Path, run_predict) -> None:
    files = []
    for i in range(2):
        path = tmp_path / f"view{i}.png"
        Image.fromarray(np.full((40, 40), 60 + 50 * i, np.uint8)).save(path)
        files.append(str(path))
    result = run_predict(weights, "--study", "--study-type", "XR_FOREARM", *files)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines[:2]] == files
    study = lines[2]
    assert study["probability"] == pytest.approx(np.mean([line["probability"] for line in lines[:2]]), abs=1e-5)
    assert study["verdict"] in {"abnormal", "normal"}


def test_predict_cli_reports_bad_files_and_goes_on(weights: Path, tmp_path: Path, run_predict) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(good)
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    missing = tmp_path / "missing.png"
    result = run_predict(weights, str(bad), str(good), str(missing))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert [json.loads(line)["file"] for line in result.stdout.splitlines()] == [str(good)]


def test_predict_cli_writes_cams(weights: Path, tmp_path: Path, run_predict) -> None:
    image = tmp_path / "view.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40), dtype=np.uint8)).save(image)
    out = tmp_path / "cams"
    result = run_predict(weights, "--cam", "GradCAM", "--out", str(out), str(image))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    heatmap = np.load(record["heatmap"])
    assert heatmap.shape == (50, 40)
    assert Image.open(record["overlay"]).size == (40, 50)


def test_predict_cli_unknown_model_is_one_line(tmp_path: Path, run_predict) -> None:
    result = run_predict(tmp_path, "x.png", model="nope")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_main_entry_points_have_help() -> None:
    for module in (predict_cli, evaluate_cli, train_cli):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0


def test_ensemble_averages_member_probabilities(weights: Path, fake_root: Path, tmp_path: Path) -> None:
    from core.model import ensemble

    second = tmp_path / "second"
    assert (
        train_cli.main(["--mura-root", str(fake_root), "--out", str(second), "--epochs", "1", "--seed", "1", *TINY])
        == 0
    )
    card = ensemble.combine([weights / "tiny", second], tmp_path / "pair")
    assert len(card["members"]) == 2 and set(card["thresholds"]) >= {"default", "XR_HUMERUS"}
    pair = load_model("pair", directory=tmp_path)
    members = [load_model("tiny", directory=weights), load_model("second", directory=tmp_path)]
    rng = np.random.default_rng(2)
    views = [rng.integers(0, 255, size=(40, 36), dtype=np.uint8) for _ in range(2)]
    expected = np.mean([predict_images(m, views) for m in members], axis=0)
    np.testing.assert_allclose(predict_images(pair, views), expected, atol=1e-5)
    assert pair.layer_paths(next(iter(pair.cam_layers)))[1].startswith("members.1.")
    with pytest.raises(ValueError, match="at least two"):
        ensemble.combine([second], tmp_path / "solo")


def test_cross_validated_ensemble_chooses_thresholds_out_of_fold(fake_root: Path, tmp_path: Path) -> None:
    from core.model import ensemble

    folds = []
    for fold in range(2):
        out = tmp_path / f"fold{fold}"
        assert (
            train_cli.main(
                [
                    "--mura-root",
                    str(fake_root),
                    "--out",
                    str(out),
                    "--epochs",
                    "1",
                    "--seed",
                    str(fold),
                    "--folds",
                    "2",
                    "--fold",
                    str(fold),
                    *TINY,
                ]
            )
            == 0
        )
        folds.append(out)
    card = ensemble.combine(folds, tmp_path / "cv")
    out_of_fold = pd.read_csv(ModelArtifacts(tmp_path / "cv").holdout_predictions)
    member_rows = pd.concat([pd.read_csv(ModelArtifacts(f).holdout_predictions) for f in folds])
    # Every train image once, with the probability of the member that held its fold out.
    from core.data import mura

    assert sorted(out_of_fold["path"]) == sorted(mura.read_images(fake_root, "train")["path"])
    merged = out_of_fold.merge(member_rows, on="path", suffixes=("", "_member"))
    np.testing.assert_allclose(merged["probability"], merged["probability_member"])
    thresholds, _ = holdout_summary(out_of_fold)
    assert card["thresholds"] == thresholds
    assert "out-of-fold" in card["threshold_rule"] and [m["fold"] for m in card["members"]] == [0, 1]
    assert card["training_data"]["holdout"] == subset_counts(out_of_fold)
    assert card["recipe"]["fold"] == [0, 1] and card["recipe"]["seed"] == [0, 1]
    with pytest.raises(ValueError, match="same fold"):
        ensemble.combine([folds[0], folds[0]], tmp_path / "twice")


def test_ensemble_cams_reach_every_member(tmp_path: Path) -> None:
    import json as json_module

    import torch

    from core.cam.explain import METHODS, explain
    from core.model.checkpoint import save_ensemble_checkpoint
    from core.model.registry import create_model
    from core.store.artifacts import CARD_FILE, CHECKPOINT_FILE

    torch.manual_seed(0)
    members = [create_model("mobilenet_v2") for _ in range(2)]
    directory = tmp_path / "pair"
    directory.mkdir()
    save_ensemble_checkpoint(directory / CHECKPOINT_FILE, members, "mobilenet_v2", 64)
    (directory / CARD_FILE).write_text(json_module.dumps({"architecture": "mobilenet_v2"}))
    pair = load_model("pair", directory=tmp_path)
    pixels = np.random.default_rng(0).integers(0, 255, size=(70, 50), dtype=np.uint8)
    expected = float(predict_images(pair, [pixels])[0])
    # Every fast method: an ensemble hands the CAM one target layer per member (ShapleyCAM used to
    # fail there, its Hessian-vector product freeing the graph after the first layer).
    for method in (name for name, info in METHODS.items() if not info.slow):
        explanation = explain(pair, pixels, method=method)
        assert explanation.heatmap.shape == (70, 50), method
        assert np.isfinite(explanation.heatmap).all(), method
        assert explanation.probability == pytest.approx(expected, abs=1e-4), method


def test_predict_cli_cams_come_with_a_manifest(weights: Path, tmp_path: Path, run_predict) -> None:
    """A folder of heat maps says what made them (before: bare .npy/.png files)."""
    image = tmp_path / "view.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 40), dtype=np.uint8)).save(image)
    out = tmp_path / "cams"
    result = run_predict(weights, "--cam", "LayerCAM", "--out", str(out), str(image))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "tiny" and manifest["method"] == "LayerCAM" and manifest["target"] == "abnormal"
    assert manifest["layers"] and len(manifest["checkpoint_sha256"]) == 64
    assert {"torch", "grad-cam", "numpy"} <= set(manifest["versions"])
    [entry] = manifest["files"]
    assert entry["file"] == str(image) and Path(entry["heatmap"]).is_file() and entry["raw_peak"] >= 0


def test_a_fracture_output_leaves_the_mura_output_as_it_was() -> None:
    torch.manual_seed(0)
    model = create_model("mobilenet_v2").eval()
    batch = torch.rand(3, 3, 32, 32)
    before = model(batch)
    joint = training._with_fracture_output(model)
    both = joint(batch)
    assert both.shape == (3, 2)
    torch.testing.assert_close(both[:, :1], before)
    torch.testing.assert_close(training._mura_model(joint, "mobilenet_v2").eval()(batch), before)


def test_joint_training_with_fracatlas(fake_root: Path, tmp_path: Path) -> None:
    """FracAtlas upper-limb images train a second output; the checkpoint ships the MURA output only."""
    atlas = make_fake_fracatlas(tmp_path / "fracatlas")
    out = tmp_path / "joint"
    assert (
        train_cli.main(
            [
                "--mura-root",
                str(fake_root),
                "--out",
                str(out),
                "--epochs",
                "2",
                *TINY,
                "--fracatlas",
                str(atlas),
                "--channels-last",
            ]
        )
        == 0
    )
    assert "holdout_fracture_auroc" in pd.read_csv(out / TRAINING_LOG_FILE).columns
    loaded = load_model("joint", directory=tmp_path)
    assert loaded.model(torch.rand(2, 3, 32, 32)).shape == (2, 1)
    held = pd.read_csv(ModelArtifacts(out).predictions(training.FRACTURE_HOLDOUT))
    assert not held["region"].eq("leg/hip").any() and held["probability"].between(0, 1).all()
    # The one radiograph FracAtlas stores twice (the last two rows) is held out together or fitted together.
    copies = [f"images/IMG{i:07d}.jpg" for i in (len(FAKE_ROWS) - 1, len(FAKE_ROWS))]
    assert held["file"].isin(copies).sum() in (0, 2)
    card = json.loads((out / CARD_FILE).read_text())
    fitted = card["training_data"]["fracatlas"]
    assert fitted["fit_images"] + fitted["holdout_images"] == sum(region != "leg/hip" for region, *_ in FAKE_ROWS)
    assert "fracatlas" not in card["recipe"] and set(card["training_data"]["all"]) == {"XR_HUMERUS", "XR_FOREARM"}


def test_joint_training_refuses_the_study_loss(fake_root: Path, tmp_path: Path) -> None:
    atlas = make_fake_fracatlas(tmp_path / "fracatlas")
    config = training.TrainConfig(
        mura_root=str(fake_root), arch="mobilenet_v2", out=str(tmp_path / "x"), fracatlas=str(atlas), study_loss=True
    )
    with pytest.raises(training.TrainingError, match="study-loss"):
        training.train(config)
