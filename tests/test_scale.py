"""Scaling out core.evaluate: an absent device is one sentence, a missing Ray install is one
sentence, and DataLoader workers and a local Ray Data run write the very files (evaluation, CAM sweep)
the single process writes."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from core import evaluate as evaluate_cli
from core import localize as localize_cli
from core import predict as predict_cli
from core.eval import localization_sweep
from core.model.checkpoint import DEFAULT_MODEL
from core.model.devices import DeviceError, resolve_device
from core.model.scale import Engine, ScaleError, import_ray, ray_session
from core.store.artifacts import ModelArtifacts
from tests.fake_mura import make_fake_mura
from tests.outlined_fracatlas import make_outlined_fracatlas

pytestmark = pytest.mark.slow  # starts a local Ray cluster


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present, so --device cuda is not absent")
def test_an_absent_device_is_one_line_and_status_2(
    tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tiny_weights))
    root = make_fake_mura(tmp_path / "mura", patients_per_type=1)
    assert evaluate_cli.main(["--mura-root", str(root), "--device", "cuda", "--n-boot", "10"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --device cuda:") and "--device cpu" in error and "\n" not in error
    assert not (tiny_weights / DEFAULT_MODEL / "predictions_valid.csv").exists()
    image = next(root.rglob("*.png"))
    assert predict_cli.main([str(image), "--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err
    with pytest.raises(DeviceError, match="for GPUs"):
        resolve_device("cpu", "bf16")


def test_missing_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is not installed
    with pytest.raises(ScaleError, match=r"pip install '\.\[scale\]'"):
        import_ray()


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install -r requirements-scale.txt)"
)
def test_workers_and_local_ray_write_the_single_process_files(
    tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    from ray._private import ray_constants

    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tiny_weights))
    # Cluster mode for this driver too (an embedded Ray earlier in this process may have left it off).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    root = make_fake_mura(tmp_path / "mura", patients_per_type=2, size=(64, 56))
    model = tiny_weights / DEFAULT_MODEL
    args = ["--mura-root", str(root), "--n-boot", "20", "--threads", "1", "--batch-size", "3"]
    assert evaluate_cli.main(args) == 0
    single = (model / "predictions_valid.csv").read_bytes()
    assert evaluate_cli.main([*args, "--workers", "2", "--force"]) == 0  # DataLoader processes decode
    assert (model / "predictions_valid.csv").read_bytes() == single
    (model / "predictions_valid.csv").unlink()
    (model / "metrics_valid.json").unlink()
    files = ModelArtifacts(model)
    sweep = [
        "--root",
        str(make_outlined_fracatlas(tmp_path / "fracatlas")),
        "--methods",
        "GradCAM",
        "HiResCAM",
        "--layers",
        "stage 5 (96 ch, stride 16)",
        "--bootstrap",
        "20",
    ]
    assert localize_cli.main(sweep) == 0
    swept = localization_sweep.read_rows(files.localization(localization_sweep.DATASET))
    files.localization(localization_sweep.DATASET).unlink()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    try:
        assert evaluate_cli.main([*args, "--ray"]) == 0
        assert localize_cli.main([*sweep, "--ray"]) == 0
    finally:
        ray.shutdown()
    assert (model / "predictions_valid.csv").read_bytes() == single
    assert len(single.splitlines()) > 4  # a few images, in more than one batch
    on_ray = localization_sweep.read_rows(files.localization(localization_sweep.DATASET))
    assert len(swept) == 3 * 4  # three outlined fractures x (two maps + two chance maps)
    pd.testing.assert_frame_equal(
        *(
            rows.drop(columns="seconds").sort_values(localization_sweep.KEY_COLUMNS).reset_index(drop=True)
            for rows in (on_ray, swept)
        )
    )


def test_a_wrong_ray_address_is_one_sentence_within_seconds(
    tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ray itself retries an address that does not answer without end (it also swaps 127.0.0.1 for
    the host's other address)."""
    pytest.importorskip("ray")
    from ray._private import ray_constants

    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tiny_weights))
    # core.model.scale keeps a loopback address on loopback by setting these: restored afterwards.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    root = make_fake_mura(tmp_path / "mura", patients_per_type=1)
    for address, words in (("127.0.0.1:1", "No Ray cluster answers at 127.0.0.1:1"), ("nonsense", "is not host:port")):
        started = time.monotonic()
        assert evaluate_cli.main(["--mura-root", str(root), "--n-boot", "10", "--ray-address", address]) == 2
        assert time.monotonic() - started < 30
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and words in errors[0], errors


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or sys.platform != "linux",
    reason="needs Ray (requirements-scale.txt) and Linux",
)
def test_the_embedded_ray_listens_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's own default swaps 127.0.0.1 for the host's other address and listens on every interface."""
    from ray._private import ray_constants

    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)  # Ray's default on Linux; restored after
    with ray_session(Engine(ray=True)) as ray:
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
        children = [
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and _parent(entry) == os.getpid()
        ]
        listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
        ours = [line.split()[3] for line in listening.splitlines() if any(f"pid={pid}," in line for pid in children)]
    assert ours and all(address.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for address in ours), ours


def _parent(process: Path) -> int | None:
    try:
        return int((process / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray_start(*arguments: str) -> None:
    # Multi-node needs Ray's cluster mode, in which 127.0.0.1 is swapped for the host's other address
    # (127.0.0.2 and 127.0.0.3 are loopback too, and kept); its servers then listen on every interface.
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "start", "--num-cpus", "1", "--disable-usage-stats", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]


def _processes_of(marker: str) -> list[int]:
    """Ids of the processes that name ``marker`` (the cluster's own temp folder) on their command line
    or hold a file in it open (Ray's agents rename their command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            named = marker.encode() in (entry / "cmdline").read_bytes()
            named = named or any(marker in os.readlink(fd) for fd in (entry / "fd").iterdir())
        except OSError:
            continue
        if named:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or sys.platform != "linux",
    reason="needs Ray (requirements-scale.txt) and Linux",
)
def test_a_two_node_ray_cluster_on_loopback_writes_the_single_process_files(
    tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real cluster: a head and a second node of one CPU each, at loopback addresses; core.evaluate
    and core.localize through --ray-address write what the single process writes. Both nodes are
    stopped by their own process ids."""
    import ray
    from ray._private import ray_constants

    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tiny_weights))
    # Cluster mode for this driver too (an embedded Ray earlier in this process may have left it off).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    root = make_fake_mura(tmp_path / "mura", patients_per_type=2, size=(64, 56))
    model = tiny_weights / DEFAULT_MODEL
    args = ["--mura-root", str(root), "--n-boot", "20", "--threads", "1", "--batch-size", "3"]
    assert evaluate_cli.main(args) == 0
    single = (model / "predictions_valid.csv").read_bytes()
    files = ModelArtifacts(model)
    sweep = [
        "--root",
        str(make_outlined_fracatlas(tmp_path / "fracatlas")),
        "--methods",
        "GradCAM",
        "--layers",
        "stage 5 (96 ch, stride 16)",
        "--bootstrap",
        "20",
    ]
    assert localize_cli.main(sweep) == 0
    swept = localization_sweep.read_rows(files.localization(localization_sweep.DATASET))
    files.localization(localization_sweep.DATASET).unlink()

    temp = tempfile.mkdtemp(prefix="mura_lens_ray_", dir="/tmp")  # short: Ray's socket paths have a limit
    port = _free_port()
    try:
        _ray_start(
            "--head",
            "--node-ip-address",
            "127.0.0.2",
            "--port",
            str(port),
            "--temp-dir",
            temp,
            "--include-dashboard",
            "false",
        )
        _ray_start("--address", f"127.0.0.2:{port}", "--node-ip-address", "127.0.0.3")
        ray.init(address=f"127.0.0.2:{port}", log_to_driver=False, configure_logging=False)
        try:
            assert sorted(node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]) == [
                "127.0.0.2",
                "127.0.0.3",
            ]
        finally:
            ray.shutdown()
        address = ["--ray-address", f"127.0.0.2:{port}"]
        assert evaluate_cli.main([*args, *address, "--force"]) == 0
        assert localize_cli.main([*sweep, *address]) == 0
    finally:
        for pid in _processes_of(temp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
    assert (model / "predictions_valid.csv").read_bytes() == single
    on_ray = localization_sweep.read_rows(files.localization(localization_sweep.DATASET))
    pd.testing.assert_frame_equal(
        *(
            rows.drop(columns="seconds").sort_values(localization_sweep.KEY_COLUMNS).reset_index(drop=True)
            for rows in (on_ray, swept)
        )
    )
