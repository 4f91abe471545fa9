"""Hardening (issue 5): the bad-input corpus through the CLI and the Explain page's uploader,
8 threads sharing one model, and core.evaluate killed mid-run.

Everything runs on the scratch model (tests/conftest.py) and generated inputs (tests/bad_inputs.py,
tests/fake_mura.py); nothing is downloaded and no MURA pixel is used.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core import evaluate as evaluate_cli
from core import predict as predict_cli
from core.cam.explain import explain
from core.data.imaging import load_radiograph
from core.model.checkpoint import DEFAULT_MODEL, load_model
from core.model.prediction import predict_images
from core.store.artifacts import CARD_FILE, CHECKPOINT_FILE
from tests.app_pages import study_probability
from tests.bad_inputs import BadInput, corpus, phantom
from tests.fake_fracatlas import make_fake_fracatlas
from tests.fake_mura import make_fake_mura
from tests.test_app_explain import FRACTURE_VIEWS, assert_clean, open_explain

pytestmark = pytest.mark.slow  # runs the CLIs in subprocesses and the app on a whole corpus

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ACCEPTED = [item for item in corpus() if item.expect == "accept"]
REFUSED = [item for item in corpus() if item.expect == "refuse"]


def is_one_sentence(text: str) -> bool:
    """One line, starting with a capital and ending with a full stop, with no second sentence in it."""
    return "\n" not in text and text[:1].isupper() and text.endswith(".") and re.search(r"[.!?] [A-Z]", text) is None


def disk_name(filename: str) -> str:
    """The user's file name as a file system allows it: '/' is the one byte a name cannot hold."""
    return filename.replace("/", "_")


# --- 1. python -m core.predict over the whole corpus ---------------------------------------------


def write_corpus(directory: Path) -> dict[str, Path]:
    """Each item in its own folder (named after the item, so equal user file names do not clash)."""
    files = {}
    for item in corpus():
        folder = directory / item.name
        folder.mkdir()
        files[item.name] = folder / disk_name(item.filename)
        files[item.name].write_bytes(item.data)
    return files


def test_predict_cli_accepts_or_refuses_every_corpus_file_in_one_run(scratch_weights: Path, tmp_path: Path) -> None:
    files = write_corpus(tmp_path)
    assert any(os.fsencode(path.name) != path.name.encode("utf-8", "replace") for path in files.values()), (
        "the corpus should put a non-UTF-8 name on disk"
    )
    env = os.environ | {"MURA_LENS_WEIGHTS_DIR": str(scratch_weights), "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "core.predict", "--threads", "1", *[str(path) for path in files.values()]],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        timeout=180,
    )
    stdout = result.stdout.decode("utf-8", "surrogateescape")
    stderr = result.stderr.decode("utf-8", "surrogateescape")
    assert "Traceback" not in stdout + stderr, stderr
    assert result.returncode == 2, stderr

    records = [json.loads(line) for line in stdout.splitlines()]
    # Undecodable bytes in a name are printed as U+FFFD, so every line is valid UTF-8 JSON.
    assert [record["file"] for record in records] == [browser_file_name(str(files[item.name])) for item in ACCEPTED]
    assert all(0.0 <= record["probability"] <= 1.0 for record in records)

    error_lines = stderr.splitlines()
    assert len(error_lines) == len(REFUSED), stderr
    for item in REFUSED:
        mine = [line for line in error_lines if f"/{item.name}/" in line]
        assert len(mine) == 1, (item.name, mine)
        assert mine[0].startswith("error: "), mine[0]
        reason = mine[0].split(": ", 2)[2]  # "error: <file>: <reason>"; tmp paths hold no ": "
        assert is_one_sentence(reason), (item.name, reason)


# --- 2. the Explain page's uploader, one session, the whole corpus --------------------------------


def browser_file_name(filename: str) -> str:
    """What a browser sends for a file name: valid Unicode (undecodable bytes become U+FFFD)."""
    return filename.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def expected_probability(weights: Path, item: BadInput) -> float:
    loaded = load_model(DEFAULT_MODEL, directory=weights)
    return float(predict_images(loaded, [load_radiograph(item.data).pixels])[0])


def test_explain_uploader_survives_the_whole_corpus_in_one_session(use_scratch_weights: Path) -> None:
    at = open_explain()
    for item in corpus():
        upload = (browser_file_name(item.filename), item.data, "application/octet-stream")
        at = at.file_uploader(key="explain_upload").set_value(upload).run()
        assert_clean(at)
        if item.expect == "accept":
            assert not at.error, (item.name, [e.value for e in at.error])
            assert study_probability(at) == f"{expected_probability(use_scratch_weights, item):.3f}", item.name
        else:
            assert len(at.error) == 1, (item.name, [e.value for e in at.error])
            name, reason = at.error[0].value.split("`: ", 1)
            assert "/" not in name, name
            assert is_one_sentence(reason), (item.name, reason)
            assert not at.metric, item.name
    good = FRACTURE_VIEWS[0]
    at = at.file_uploader(key="explain_upload").set_value((good.name, good.read_bytes(), "image/png")).run()
    assert_clean(at)
    assert not at.error
    loaded = load_model(DEFAULT_MODEL, directory=use_scratch_weights)
    expected = predict_images(loaded, [load_radiograph(good.read_bytes()).pixels])[0]
    assert study_probability(at) == f"{expected:.3f}"


# --- 3. 8 threads on one shared model --------------------------------------------------------------

THREADS = 8
CAM_METHODS = ("GradCAM", "EigenCAM")


def thread_images() -> list[np.ndarray]:
    """Phantoms of different shapes, so each letterbox and CAM crop differs."""
    shapes = [(70, 50), (64, 64), (50, 90), (120, 80)]
    return [np.array(Image.fromarray(np.rint(phantom(128) * 255).astype(np.uint8)).resize((w, h))) for h, w in shapes]


def hooks_left(model: torch.nn.Module) -> list[str]:
    hook_dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [f"{name}.{kind}" for name, module in model.named_modules() for kind in hook_dicts if getattr(module, kind)]


def test_eight_threads_on_one_model_give_the_serial_results(scratch_weights: Path) -> None:
    loaded = load_model(DEFAULT_MODEL, directory=scratch_weights)
    images = thread_images()
    requires_grad = [p.requires_grad for p in loaded.model.parameters()]
    module_types = [type(m) for m in loaded.model.modules()]
    serial: dict[str, Any] = {}

    def run_serially() -> None:
        serial["probabilities"] = predict_images(loaded, images)
        serial["maps"] = {
            method: [explain(loaded, pixels, method=method).heatmap for pixels in images] for method in CAM_METHODS
        }

    # The reference runs in a fresh thread like the workers: torch.set_num_threads called from a
    # non-main thread (the dashboard's script thread does) changes the intra-op thread count of
    # threads started later but not of the main thread, and a convolution's float32 result
    # moves by ~2e-6 with the thread count.
    reference = threading.Thread(target=run_serially, daemon=True)
    reference.start()
    reference.join(timeout=120)
    serial_probabilities, serial_maps = serial["probabilities"], serial["maps"]

    start = threading.Barrier(THREADS)
    results: dict[int, tuple[np.ndarray, dict[str, list[np.ndarray]], list[float]]] = {}
    failures: list[BaseException] = []

    def work(index: int) -> None:
        try:
            start.wait(timeout=30)
            order = CAM_METHODS if index % 2 else CAM_METHODS[::-1]  # interleave methods across threads
            maps: dict[str, list[np.ndarray]] = {}
            cam_probabilities = []
            for method in order:
                explanations = [explain(loaded, pixels, method=method) for pixels in images]
                maps[method] = [e.heatmap for e in explanations]
                cam_probabilities += [e.probability for e in explanations]
            results[index] = (predict_images(loaded, images), maps, cam_probabilities)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread by the assert below
            failures.append(exc)

    # Daemon threads: a deadlock fails the test at the join timeout instead of hanging pytest.
    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(THREADS)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 180
    for worker in workers:
        worker.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(worker.is_alive() for worker in workers), "threads still running: deadlock or far too slow"
    assert not failures, failures

    for probabilities, maps, cam_probabilities in results.values():
        np.testing.assert_allclose(probabilities, serial_probabilities, rtol=0, atol=1e-6)
        np.testing.assert_allclose(
            cam_probabilities, np.tile(serial_probabilities, len(CAM_METHODS)), rtol=0, atol=1e-5
        )
        for method in CAM_METHODS:
            for got, expected in zip(maps[method], serial_maps[method], strict=True):
                np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert len(results) == THREADS
    assert hooks_left(loaded.model) == []
    assert not loaded.model.training and not any(m.training for m in loaded.model.modules())
    assert [p.requires_grad for p in loaded.model.parameters()] == requires_grad
    assert [type(m) for m in loaded.model.modules()] == module_types


# --- 4. core.evaluate killed mid-run ----------------------------------------------------------------

PROGRESS = re.compile(rb"\| *(\d+)/(\d+) \[")


def test_evaluate_killed_mid_run_leaves_previous_results_intact(scratch_weights: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    model_dir = weights / DEFAULT_MODEL
    model_dir.mkdir(parents=True)
    for name in (CHECKPOINT_FILE, CARD_FILE):
        shutil.copy(scratch_weights / DEFAULT_MODEL / name, model_dir / name)
    previous = {
        model_dir / "predictions_valid.csv": b"path,probability\nMURA-v1.1/valid/previous.png,0.123456\n",
        model_dir / "metrics_valid.json": b'{"previous": true}\n',
    }
    for path, content in previous.items():
        path.write_bytes(content)
    root = make_fake_mura(tmp_path / "mura", patients_per_type=60, seed=3, size=(192, 160))

    env = os.environ | {"MURA_LENS_WEIGHTS_DIR": str(weights), "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core.evaluate",
            "--mura-root",
            str(root),
            "--split",
            "valid",
            "--threads",
            "1",
            "--batch-size",
            "4",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stderr = b""
        progress: tuple[int, int] | None = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            readable, _, _ = select.select([process.stderr], [], [], 0.5)
            if readable:
                stderr += os.read(process.stderr.fileno(), 65536)
            bars = PROGRESS.findall(stderr)
            if bars and 0 < int(bars[-1][0]) < int(bars[-1][1]):
                progress = int(bars[-1][0]), int(bars[-1][1])
                break
        running_at_kill = process.poll() is None
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        process.stderr.close()
    assert progress is not None, stderr.decode(errors="replace")
    assert running_at_kill, "evaluate finished before the kill"
    assert process.returncode == -signal.SIGKILL
    for path, content in previous.items():
        assert path.read_bytes() == content, path.name


# --- 5. what the command lines print: no terminal control from file names or CSV cells ----------

_FORGED = "\x1b[2J\r\nerror: forged\x07"


def _error_lines(err: str) -> list[str]:
    assert not set(err) & {"\x1b", "\r", "\x07"}, repr(err)
    return [line for line in err.splitlines() if line.startswith("error")]


def test_predict_escapes_control_characters_of_file_names(
    tiny_weights: Path, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tiny_weights))
    bad = tmp_path / f"x{_FORGED}.png"
    bad.write_bytes(b"not an image")
    assert predict_cli.main([str(bad), "--threads", "1"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "x\\x1b[2J\\x0d\\x0aerror: forged\\x07.png" in line


def test_evaluate_escapes_control_characters_of_labels_csv(
    tiny_weights: Path, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tiny_weights))
    root = make_fake_fracatlas(tmp_path / "fracatlas")
    labels = root / "labels.csv"
    labels.write_text(labels.read_text().replace(".jpg,hand,", f'.jpg,"hand{_FORGED}",', 1))
    assert (
        evaluate_cli.main(
            ["--dataset", "fracatlas", "--root", str(root), "--n-boot", "5", "--threads", "1", "--backend", "torch"]
        )
        == 2
    )
    (line,) = _error_lines(capsys.readouterr().err)
    assert "unknown region" in line
