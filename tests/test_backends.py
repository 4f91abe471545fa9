"""core.model.backends: the ONNX Runtime graph gives torch's probabilities (within 1e-4) at any batch
size, is exported once per set of weights, and a missing onnxruntime (or a GPU) falls back to
torch with one line saying why."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import evaluate as evaluate_cli
from core.data import mura
from core.eval import evaluation
from core.model import backends
from core.model.backends import batch_predictor, onnx_model_path, resolve_backend
from core.model.checkpoint import DEFAULT_MODEL, LoadedModel
from core.model.prediction import model_inputs, predict_batch
from core.model.registry import MeanProbabilityEnsemble, get_config
from tests.fake_mura import make_fake_mura
from tests.synthetic import calibrated_mobilenet, synthetic_radiograph

SIZE = 64


def _loaded(tmp_path: Path, *, members: int, tta: bool, seed: int = 0) -> LoadedModel:
    nets = [calibrated_mobilenet(seed + i, SIZE) for i in range(members)]
    model = nets[0] if members == 1 else MeanProbabilityEnsemble(nets).eval()
    return LoadedModel(name="tiny", model=model, config=get_config("mobilenet_v2"), input_size=SIZE,
                       card={"tta": tta}, directory=tmp_path)


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "onnx_cache"
    monkeypatch.setenv("MURA_LENS_ONNX_CACHE", str(cache))
    return cache


@pytest.mark.parametrize(("members", "tta"), [(1, False), (2, True)])
def test_onnx_matches_torch_within_1e_4(tmp_path: Path, members: int, tta: bool) -> None:
    pytest.importorskip("onnxruntime")
    loaded = _loaded(tmp_path, members=members, tta=tta)
    images = [synthetic_radiograph(seed, size=48 + 8 * seed) for seed in range(6)]
    onnx = batch_predictor(loaded, "onnx")
    for batch in (images[:1], images[1:4], images[4:]):  # batch sizes 1, 3, 2: the batch axis is dynamic
        inputs = model_inputs(loaded, batch)
        expected = predict_batch(loaded, inputs)
        got = onnx(inputs)
        assert got.shape == expected.shape and got.dtype == np.float64
        assert np.abs(got - expected).max() < 1e-4
    assert np.ptp(predict_batch(loaded, model_inputs(loaded, images))) > 1e-3  # the images are told apart


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
    assert sorted(p.name for p in onnx_cache.iterdir()) == sorted(p.name for p in (first, other, untta))


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
def test_evaluate_on_either_backend_and_the_fallback_line(tiny_weights: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
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
    probabilities = evaluation._predict_files(loaded, tmp_path, [], mura.image_file, batch_size=4, progress=False,
                                              description="none")
    assert probabilities.shape == (0,)
