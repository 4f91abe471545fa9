"""core.store.artifacts: one place for a model folder's file names, and evaluation pairs that never mix."""

from __future__ import annotations

import errno
import io
import json
import threading
from pathlib import Path

import pandas as pd
import pytest

from core.store import atomic
from core.store.artifacts import (
    EvaluationMismatchError,
    ModelArtifacts,
    SmallerEvaluationError,
    check_replacement,
    file_version,
    read_evaluation,
    report_written,
    write_evaluation,
)


def latin1_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text reads and writes that name no encoding (pathlib asks io.text_encoding) get Latin-1, as
    under a Latin-1 locale; the test machine has only UTF-8 locales."""
    monkeypatch.setattr(io, "text_encoding", lambda encoding, stacklevel=2: encoding or "latin-1")


def _predictions(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [f"img{i}.png" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "probability": [i / max(n, 1) for i in range(n)],
        }
    )


def test_paths_of_a_model_folder(tmp_path):
    files = ModelArtifacts.of("demo", tmp_path)
    assert files.name == "demo"
    assert files.checkpoint == tmp_path / "demo" / "checkpoint.pt"
    assert files.card == tmp_path / "demo" / "model_card.json"
    assert files.training_log == tmp_path / "demo" / "training_log.csv"
    assert files.train_state == tmp_path / "demo" / "train_state.pt"
    assert files.holdout_predictions == tmp_path / "demo" / "predictions_train_holdout.csv"
    assert files.predictions("fracatlas") == tmp_path / "demo" / "predictions_fracatlas.csv"
    assert files.metrics("valid") == tmp_path / "demo" / "metrics_valid.json"
    assert files.localization("fracatlas").name == "localization_fracatlas.csv"
    assert files.localization_summary("fracatlas").name == "localization_fracatlas.json"


@pytest.mark.parametrize("dataset", ["", "../valid", "a/b", "valid.csv"])
def test_dataset_names_cannot_leave_the_folder(tmp_path, dataset):
    with pytest.raises(ValueError, match="not a dataset name"):
        ModelArtifacts.of("demo", tmp_path).predictions(dataset)


def test_weights_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tmp_path))
    assert ModelArtifacts.of("demo").directory == tmp_path / "demo"


def test_round_trip_and_absent_pair(tmp_path):
    files = ModelArtifacts(tmp_path)
    assert read_evaluation(files, "valid") is None
    write_evaluation(files, "valid", _predictions(6), {"images": 6})
    evaluation = read_evaluation(files, "valid")
    assert evaluation.metrics["images"] == 6
    pd.testing.assert_frame_equal(evaluation.predictions, _predictions(6))
    assert file_version(files.metrics("valid")) > 0
    assert file_version(files.metrics("nothing")) == 0


def test_kill_between_the_two_writes_is_detected(tmp_path, monkeypatch):
    """A run killed after writing predictions leaves new predictions beside old metrics."""
    files = ModelArtifacts(tmp_path)
    write_evaluation(files, "valid", _predictions(40), {"images": 40})
    real_write = atomic.write_text

    def killed_before_metrics(path, text):
        if path.suffix == ".json":
            raise KeyboardInterrupt
        real_write(path, text)

    monkeypatch.setattr(atomic, "write_text", killed_before_metrics)
    with pytest.raises(KeyboardInterrupt):
        write_evaluation(files, "valid", _predictions(7), {"images": 7}, force=True)
    with pytest.raises(EvaluationMismatchError, match="different runs"):
        read_evaluation(files, "valid")


def test_pair_without_hash_is_read_as_written_by_older_versions(tmp_path):
    files = ModelArtifacts(tmp_path)
    _predictions(3).to_csv(files.predictions("valid"), index=False)
    files.metrics("valid").write_text(json.dumps({"images": 3}))
    assert read_evaluation(files, "valid").metrics == {"images": 3}


@pytest.mark.parametrize(
    "metrics_text", ["", "[]", "{not json", b"\xff\xfe".decode("latin-1"), "[" * 100_000 + "]" * 100_000]
)
def test_unreadable_metrics_is_one_sentence(tmp_path, metrics_text):
    files = ModelArtifacts(tmp_path)
    _predictions(3).to_csv(files.predictions("valid"), index=False)
    files.metrics("valid").write_text(metrics_text)
    with pytest.raises(EvaluationMismatchError, match="re-run the evaluation"):
        read_evaluation(files, "valid")


def test_shipped_evaluations_are_consistent_pairs():
    from core.model.checkpoint import list_shipped_models

    for model in list_shipped_models():
        evaluation = read_evaluation(ModelArtifacts.of(model), "valid")
        assert evaluation is not None and "predictions_sha256" in evaluation.metrics
        assert evaluation.metrics["evaluation"]["images"] == len(evaluation.predictions)


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every text write creates its file, then fails as a full disk does."""

    def full(self, *args, **kwargs):
        self.touch()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)


def test_disk_full_leaves_no_temporary_file_and_names_the_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics_valid.json"
    target.write_text("previous")
    _disk_full(monkeypatch)
    with pytest.raises(atomic.AtomicWriteError, match=f"Cannot write {target}: No space left on device"):
        atomic.write_text(target, "new")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics_valid.json"]
    assert target.read_bytes() == b"previous"


def test_two_writers_of_one_file_never_rename_each_others_half_file(tmp_path, monkeypatch):
    """Writer A is paused halfway through its temporary file while writer B writes the same target:
    B's file lands whole, and A's later bytes land in A's own file, never in B's or the target."""
    target = tmp_path / "metrics_valid.json"
    first, second = "A" * 1000, "B" * 1000
    halfway, resume = threading.Event(), threading.Event()
    real_write_text = Path.write_text

    def paused_write_text(self, text, *args, **kwargs):
        if text != first:
            return real_write_text(self, text, *args, **kwargs)
        with open(self, "w", encoding="utf-8") as handle:
            handle.write(text[:500])
            handle.flush()
            halfway.set()
            resume.wait(timeout=10)
            handle.write(text[500:])
        return len(text)

    monkeypatch.setattr(Path, "write_text", paused_write_text)
    errors: list[BaseException] = []

    def write_first():
        try:
            atomic.write_text(target, first)
        except atomic.AtomicWriteError as exc:
            errors.append(exc)

    writer = threading.Thread(target=write_first)
    writer.start()
    assert halfway.wait(timeout=10)
    atomic.write_text(target, second)
    resume.set()
    writer.join(timeout=10)
    assert errors == []
    assert target.read_text(encoding="utf-8") == first
    assert [p.name for p in tmp_path.iterdir()] == ["metrics_valid.json"]


def test_text_is_written_as_utf8_whatever_the_locale(tmp_path, monkeypatch):
    """Hashes are taken over UTF-8, so the file must be UTF-8 even under a Latin-1 locale."""
    latin1_locale(monkeypatch)
    target = tmp_path / "card.json"
    atomic.write_text(target, "Ulna – Röntgen")
    assert target.read_bytes() == "Ulna – Röntgen".encode()


def test_a_cached_pair_with_non_ascii_paths_reads_back_under_a_latin1_locale(tmp_path, monkeypatch):
    """The hash is over the UTF-8 text; a read in the locale's encoding would see other text and
    call a good pair torn."""
    latin1_locale(monkeypatch)
    files = ModelArtifacts(tmp_path)
    predictions = _predictions(4).assign(path=lambda t: "Röntgen/" + t["path"])
    write_evaluation(files, "valid", predictions, {"images": 4, "note": "ulna – radius"})
    evaluation = read_evaluation(files, "valid")
    assert evaluation.metrics["note"] == "ulna – radius"
    assert evaluation.predictions["path"].iloc[0] == "Röntgen/img0.png"


def test_written_files_get_the_usual_mode(tmp_path):
    target = tmp_path / "metrics_valid.json"
    atomic.write_text(target, "{}")
    plain = tmp_path / "plain.json"
    plain.write_text("{}", encoding="utf-8")
    assert target.stat().st_mode == plain.stat().st_mode


def test_failed_torch_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(obj, path):
        Path(path).write_bytes(b"PK")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(atomic.torch, "save", full)
    with pytest.raises(atomic.AtomicWriteError, match="Cannot write .*checkpoint.pt: PytorchStreamWriter"):
        atomic.save_torch({"a": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_smaller_evaluation_does_not_replace_a_larger_one_unless_forced(tmp_path):
    files = ModelArtifacts(tmp_path / "demo")
    files.directory.mkdir()
    write_evaluation(files, "valid", _predictions(40), {"images": 40})
    with pytest.raises(
        SmallerEvaluationError,
        match="demo/predictions_valid.csv holds 40 images and this evaluation only 7; pass --force",
    ):
        write_evaluation(files, "valid", _predictions(7), {"images": 7})
    assert read_evaluation(files, "valid").metrics["images"] == 40
    write_evaluation(files, "valid", _predictions(41), {"images": 41})  # more images: no question asked
    write_evaluation(files, "valid", _predictions(7), {"images": 7}, force=True)
    assert read_evaluation(files, "valid").metrics["images"] == 7
    check_replacement(files, "other", 1)  # nothing cached: nothing to protect


def test_report_written_prints_each_file_or_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    written = [tmp_path / "a.csv", tmp_path / "a.json"]
    assert report_written(lambda: written, (ValueError,)) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {path}" for path in written]

    def fails() -> list[Path]:
        raise ValueError("the folder holds no images")

    assert report_written(fails, (ValueError,)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "error: the folder holds no images\n"
    with pytest.raises(KeyError):  # anything else is a bug, not a user's error: it is not swallowed
        report_written(lambda: {}["missing"], (ValueError,))
