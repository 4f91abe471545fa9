"""Scaling out core.evaluate: an absent device is one sentence, a missing Ray install is one
sentence, and DataLoader workers and a local Ray Data run write the very files (evaluation, CAM sweep)
the single process writes."""

from __future__ import annotations

import importlib.util
import sys
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
from core.model.scale import ScaleError, import_ray
from core.store.artifacts import ModelArtifacts
from tests.fake_mura import make_fake_mura
from tests.outlined_fracatlas import make_outlined_fracatlas

pytestmark = pytest.mark.slow  # starts a local Ray cluster


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present, so --device cuda is not absent")
def test_an_absent_device_is_one_line_and_status_2(tiny_weights: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
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


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed (pip install -r requirements-scale.txt)")
def test_workers_and_local_ray_write_the_single_process_files(tiny_weights: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tiny_weights))
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
    sweep = ["--root", str(make_outlined_fracatlas(tmp_path / "fracatlas")), "--methods", "GradCAM", "HiResCAM",
             "--layers", "stage 5 (96 ch, stride 16)", "--bootstrap", "20"]
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
    pd.testing.assert_frame_equal(*(rows.drop(columns="seconds").sort_values(localization_sweep.KEY_COLUMNS)
                                    .reset_index(drop=True) for rows in (on_ray, swept)))
