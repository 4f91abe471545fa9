"""core.model.backends: the ONNX Runtime graph gives torch's probabilities (within 1e-4) at any batch
size, is exported once per set of weights, and a missing onnxruntime (or a GPU) falls back to
torch with one line saying why."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core import evaluate as evaluate_cli
from core.data import mura
from core.eval import evaluation
from core.model import backends
from core.model.backends import batch_predictor, onnx_model_path, resolve_backend
from core.model.checkpoint import DEFAULT_MODEL, LoadedModel
from core.model.prediction import model_inputs, predict_batch, predict_batch_outputs
from core.model.registry import MeanProbabilityEnsemble, get_config
from tests.fake_mura import make_fake_mura
from tests.synthetic import calibrated_mobilenet, synthetic_radiograph

SIZE = 64


def _loaded(tmp_path: Path, *, members: int, tta: bool, seed: int = 0) -> LoadedModel:
    nets = [calibrated_mobilenet(seed + i, SIZE) for i in range(members)]
    model = nets[0] if members == 1 else MeanProbabilityEnsemble(nets).eval()
    return LoadedModel(
        name="tiny",
        model=model,
        config=get_config("mobilenet_v2"),
        input_size=SIZE,
        card={"tta": tta},
        directory=tmp_path,
    )


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "onnx_cache"
    monkeypatch.setenv("MURA_LENS_ONNX_CACHE", str(cache))
    return cache


@pytest.mark.slow  # an ONNX export per case
@pytest.mark.parametrize(("members", "tta"), [(1, False), (2, True)])
def test_onnx_matches_torch_within_1e_4(tmp_path: Path, members: int, tta: bool) -> None:
    pytest.importorskip("onnxruntime")
    loaded = _loaded(tmp_path, members=members, tta=tta)
    images = [synthetic_radiograph(seed, size=48 + 8 * seed) for seed in range(6)]
    onnx = batch_predictor(loaded, "onnx")
    for batch in (images[:1], images[1:4], images[4:]):  # batch sizes 1, 3, 2: the batch axis is dynamic
        inputs = model_inputs(loaded, batch)
        expected = predict_batch_outputs(loaded, inputs)
        got = onnx(inputs)
        assert got.shape == expected.shape and got.dtype == np.float64
        assert np.abs(got - expected).max() < 1e-4
    assert np.ptp(predict_batch(loaded, model_inputs(loaded, images))) > 1e-3  # the images are told apart


@pytest.mark.slow  # two ONNX exports
def test_the_export_is_cached_per_weights(tmp_path: Path, onnx_cache: Path) -> None:
    pytest.importorskip("onnxruntime")
    loaded = _loaded(tmp_path, members=1, tta=True)
    first = onnx_model_path(loaded)
    stamp = first.stat().st_mtime_ns
    assert onnx_model_path(loaded) == first and first.stat().st_mtime_ns == stamp  # reused, not exported again
    assert first.parent == onnx_cache and first.suffix == ".onnx"
    other = onnx_model_path(_loaded(tmp_path, members=1, tta=True, seed=5))  # new weights: a new export
    untta = onnx_model_path(_loaded(tmp_path, members=1, tta=False))  # another graph: a new export
    assert len({first, other, untta}) == 3
    graphs = (first, other, untta)
    assert sorted(p.name for p in onnx_cache.iterdir()) == sorted(
        [p.name for p in graphs] + [p.name + ".sha256" for p in graphs]
    )  # each with its recorded digest
    assert stat.S_IMODE(onnx_cache.stat().st_mode) == 0o700


def _constant_graph(path: Path) -> None:
    """What another local user could plant: a graph that answers 0.987654 whatever the image."""

    class Constant(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3)).unsqueeze(1) * 0 + 0.987654  # (N, outputs), as the real graph

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            Constant(),
            (torch.zeros(2, 3, SIZE, SIZE),),
            str(path),
            input_names=["x"],
            output_names=["p"],
            dynamic_axes={"x": {0: "n"}, "p": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )


def _plant(graph: Path, source: Path) -> None:
    """Put the planted graph under ``graph``'s name with a SHA-256 that matches it."""
    graph.write_bytes(source.read_bytes())
    graph.with_name(graph.name + ".sha256").write_text(hashlib.sha256(graph.read_bytes()).hexdigest())


@pytest.mark.slow  # an ONNX export per case
@pytest.mark.parametrize(
    "planting", ["no digest", "another user's folder", "a folder others may write", "another user's file", "a link"]
)
def test_a_planted_graph_is_never_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], planting: str
) -> None:
    """A graph under the name computed from the weights (in the default per-user folder of the temp
    folder) is loaded only when it is this user's own file, in a folder only this user may write,
    whose SHA-256 is the one recorded at export; otherwise the model is exported afresh."""
    pytest.importorskip("onnxruntime")
    monkeypatch.delenv("MURA_LENS_ONNX_CACHE")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    loaded = _loaded(tmp_path, members=1, tta=False)
    inputs = model_inputs(loaded, [synthetic_radiograph(seed, size=56) for seed in range(3)])
    folder = tmp_path / f"mura_lens_onnx-{os.getuid()}"
    name = onnx_model_path(loaded).name  # what a stranger computes from the shipped weights
    assert onnx_model_path(loaded).parent == folder
    shutil.rmtree(folder)
    planted = tmp_path / "planted.onnx"
    _constant_graph(planted)
    folder.mkdir()
    graph = folder / name
    if planting == "no digest":  # this user's own folder, but the graph is not the one exported
        os.chmod(folder, 0o700)
        graph.write_bytes(planted.read_bytes())
    elif planting == "a link":
        os.chmod(folder, 0o700)
        _plant(tmp_path / "elsewhere.onnx", planted)
        graph.symlink_to(tmp_path / "elsewhere.onnx")
        graph.with_name(name + ".sha256").write_bytes((tmp_path / "elsewhere.onnx.sha256").read_bytes())
    else:
        _plant(graph, planted)
        if planting == "a folder others may write":
            os.chmod(folder, 0o777)
        else:
            if os.geteuid() != 0:
                pytest.skip("making a file another user's needs root")
            os.chown(graph if planting == "another user's file" else folder, 65534, 65534)
            os.chmod(folder, 0o700 if planting == "another user's file" else 0o755)
    got = batch_predictor(loaded, "onnx")(inputs)[:, 0]
    assert np.abs(got - predict_batch(loaded, inputs)).max() < 1e-4
    assert not np.allclose(got, 0.987654)
    err = capsys.readouterr().err
    if "folder" in planting:
        assert err.count("note:") == 1 and "ONNX cache folder is not used" in err


def test_missing_onnxruntime_or_a_gpu_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_backend("torch", "cpu") == ("torch", None)
    backend, reason = resolve_backend("onnx", "cuda")
    assert backend == "torch" and "CPU only" in reason and "\n" not in reason
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` meets when it is absent
    backend, reason = resolve_backend("onnx", "cpu")
    assert backend == "torch" and "onnxruntime is not installed" in reason and "\n" not in reason
    with pytest.raises(ValueError, match="Unknown backend"):
        resolve_backend("tensorrt")


@pytest.mark.slow  # an ONNX export and two evaluations
def test_evaluate_on_either_backend_and_the_fallback_line(
    tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CSV of --backend onnx (the default) is torch's within 1e-4; without onnxruntime the
    default says so in one line and writes torch's file."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tiny_weights))
    root = make_fake_mura(tmp_path / "mura", patients_per_type=2, size=(64, 56))
    csv = tiny_weights / DEFAULT_MODEL / "predictions_valid.csv"
    args = ["--mura-root", str(root), "--n-boot", "20", "--threads", "1", "--batch-size", "3", "--force"]
    assert evaluate_cli.main([*args, "--backend", "torch"]) == 0
    on_torch = csv.read_bytes()
    assert evaluate_cli.main(args) == 0
    assert "note:" not in capsys.readouterr().err
    onnx, torch_rows = pd.read_csv(csv), pd.read_csv(io.BytesIO(on_torch))
    assert len(onnx) > 4 and (onnx["path"] == torch_rows["path"]).all()
    assert np.abs(onnx["probability"] - torch_rows["probability"]).max() < 1e-4

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr(backends, "_cached_predictor", None)  # nothing may reach ONNX Runtime now
    assert evaluate_cli.main(args) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "onnxruntime is not installed" in notes[0]
    assert csv.read_bytes() == on_torch


def test_no_files_give_no_probabilities_and_no_batches(tmp_path: Path) -> None:
    """An empty list (a filtered-out split) is an empty answer, not a prefetch of nothing."""
    loaded = _loaded(tmp_path, members=1, tta=False)
    assert list(evaluation._batches(tmp_path, [], loaded, batch_size=4)) == []
    probabilities = evaluation._predict_files(
        loaded, tmp_path, [], mura.image_file, batch_size=4, progress=False, description="none"
    )
    assert probabilities.shape == (0, len(loaded.outputs))
