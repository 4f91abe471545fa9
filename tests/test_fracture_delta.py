"""A two-output model stored as a delta on its base ensemble: the fracture branches, the base's name and
the SHA-256 of the base's checkpoint. Loading it gives the very network a full checkpoint gives; a changed
or missing base is refused in one sentence; the MURA-path artefacts are read from the base's folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from core.model.backends import batch_predictor
from core.model.checkpoint import (
    check_model,
    load_model,
    save_ensemble_checkpoint,
    save_fracture_checkpoint,
)
from core.model.fracture_model import delta_from_full
from core.model.fracture_net import TwoOutputNet
from core.model.prediction import model_inputs
from core.model.registry import ModelLoadError, create_model
from core.scoping.head import head_for
from core.store.artifacts import (
    BASE_MODEL_KEY,
    MURA_PATH_FILES,
    SHIPPED_WEIGHTS_DIR,
    ModelArtifacts,
)
from tests.synthetic import synthetic_radiograph
from tests.test_imaging import assert_one_sentence

ARCH = "efficientnet_lite0_fracture"
CARD = {"architecture": ARCH, "description": "test", "thresholds": {"default": 0.5}, "fracture_threshold": 0.3}


def _write_card(folder: Path, card: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``one``: a base ensemble of two random lite0 members; ``full``: two-output networks on them, stored
    whole; ``two``: the same networks stored as a delta on ``one``."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("weights")
    bases = [create_model("efficientnet_lite0").eval() for _ in range(2)]
    _write_card(directory / "one", {"architecture": "efficientnet_lite0", "thresholds": {"default": 0.5}})
    save_ensemble_checkpoint(directory / "one" / "checkpoint.pt", bases, "efficientnet_lite0", 224)
    # The branches start from the fp16-stored members, as assemble's do (core.model.fracture_training.load_member).
    stored = torch.load(directory / "one" / "checkpoint.pt", weights_only=True)["members"]
    for base, state in zip(bases, stored, strict=True):
        base.load_state_dict({k: v.float() for k, v in state.items()})
    nets = [TwoOutputNet(base) for base in bases]
    for net in nets:  # a trained branch, not the copy of the member's blocks it starts as
        for parameter in net.fracture.parameters():
            parameter.data.add_(0.01 * torch.randn_like(parameter))
    _write_card(directory / "full", CARD | {"name": "full"})
    save_ensemble_checkpoint(directory / "full" / "checkpoint.pt", nets, ARCH, 224)
    _write_card(directory / "two", CARD | {"name": "two", BASE_MODEL_KEY: "one"})
    save_fracture_checkpoint(directory / "two" / "checkpoint.pt", nets, ARCH, 224, ModelArtifacts(directory / "one"))
    return directory


def _assert_same_network(a: torch.nn.Module, b: torch.nn.Module) -> None:
    first, second = a.state_dict(), b.state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert first[key].dtype == second[key].dtype and torch.equal(first[key], second[key]), key
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))


@pytest.mark.slow
def test_the_delta_loads_the_full_network_bit_for_bit(weights: Path) -> None:
    delta, full = load_model("two", directory=weights), load_model("full", directory=weights)
    _assert_same_network(delta.model, full.model)
    assert delta.outputs == ("abnormal", "fracture") and delta.input_size == 224
    size = (weights / "two" / "checkpoint.pt").stat().st_size
    assert size < (weights / "full" / "checkpoint.pt").stat().st_size / 3
    check_model("two", directory=weights)


@pytest.mark.slow
def test_a_full_checkpoint_converts_to_the_same_network(weights: Path, tmp_path: Path) -> None:
    shutil.copytree(weights / "one", tmp_path / "one")
    shutil.copytree(weights / "full", tmp_path / "conv")
    (tmp_path / "one" / "training_log.csv").write_text("epoch,loss\n1,0.5\n", encoding="utf-8")
    shutil.copyfile(tmp_path / "one" / "training_log.csv", tmp_path / "conv" / "training_log.csv")
    (tmp_path / "one" / "scope_metrics.json").write_text("{}", encoding="utf-8")
    (tmp_path / "conv" / "scope_metrics.json").write_text('{"own": 1}', encoding="utf-8")
    removed = delta_from_full(
        weights / "full" / "checkpoint.pt", ModelArtifacts(tmp_path / "one"), ModelArtifacts(tmp_path / "conv")
    )
    # Only the byte-identical copy of the base's file goes; a file of the model's own stays.
    assert removed == [tmp_path / "conv" / "training_log.csv"]
    assert (tmp_path / "conv" / "scope_metrics.json").is_file()
    assert json.loads((tmp_path / "conv" / "model_card.json").read_text())[BASE_MODEL_KEY] == "one"
    assert "base" in torch.load(tmp_path / "conv" / "checkpoint.pt", weights_only=True)
    _assert_same_network(load_model("conv", directory=tmp_path).model, load_model("full", directory=weights).model)


@pytest.mark.slow
def test_networks_not_built_on_the_base_are_refused(weights: Path, tmp_path: Path) -> None:
    other = [TwoOutputNet(create_model("efficientnet_lite0").eval()) for _ in range(2)]
    with pytest.raises(ValueError, match="MURA part is not member 0"):
        save_fracture_checkpoint(tmp_path / "x.pt", other, ARCH, 224, ModelArtifacts(weights / "one"))
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
def test_a_changed_base_is_refused_in_one_sentence(weights: Path, tmp_path: Path) -> None:
    for name in ("one", "two"):
        shutil.copytree(weights / name, tmp_path / name)
    members = [create_model("efficientnet_lite0").eval() for _ in range(2)]
    save_ensemble_checkpoint(tmp_path / "one" / "checkpoint.pt", members, "efficientnet_lite0", 224)
    for check in (load_model, check_model):
        with pytest.raises(ModelLoadError) as error:
            check("two", directory=tmp_path)
        assert_one_sentence(str(error.value))
        assert "one/checkpoint.pt" in str(error.value) and "SHA-256 differs" in str(error.value)


@pytest.mark.slow
def test_a_missing_base_or_a_card_naming_another_is_one_sentence(weights: Path, tmp_path: Path) -> None:
    shutil.copytree(weights / "two", tmp_path / "two")
    with pytest.raises(ModelLoadError) as error:
        load_model("two", directory=tmp_path)
    assert_one_sentence(str(error.value))
    assert "one/checkpoint.pt is missing" in str(error.value)
    shutil.copytree(weights / "one", tmp_path / "one")
    _write_card(tmp_path / "two", CARD | {BASE_MODEL_KEY: "elsewhere"})
    with pytest.raises(ModelLoadError) as error:
        load_model("two", directory=tmp_path)
    assert_one_sentence(str(error.value))
    assert "'elsewhere'" in str(error.value)


def test_a_base_reference_without_a_hash_is_one_sentence(tmp_path: Path) -> None:
    _write_card(tmp_path / "two", CARD | {BASE_MODEL_KEY: "one"})
    branch = {"score.weight": torch.zeros(1, 128, 1, 1)}
    torch.save({"arch": ARCH, "base": {"model": "one"}, "branches": [branch]}, tmp_path / "two" / "checkpoint.pt")
    with pytest.raises(ModelLoadError) as error:
        check_model("two", directory=tmp_path)
    assert_one_sentence(str(error.value))


def test_mura_path_artefacts_are_read_from_the_base_without_an_own_copy(tmp_path: Path) -> None:
    _write_card(tmp_path / "base", {"name": "base"})
    _write_card(tmp_path / "model", {"name": "model", BASE_MODEL_KEY: "base"})
    base, model = ModelArtifacts(tmp_path / "base"), ModelArtifacts(tmp_path / "model")
    for path in (base.scope_head, base.training_log, base.holdout_predictions, base.embeddings, base.data_audit):
        path.write_text("base", encoding="utf-8")
    base.predictions("valid").write_text("base", encoding="utf-8")
    assert model.base == base
    assert model.resolve(model.scope_head) == base.scope_head
    assert model.resolve(model.holdout_predictions) == base.holdout_predictions
    assert model.resolve(model.embeddings) == base.embeddings
    # Not a MURA-path file: the model's own evaluation, never the base's.
    assert model.resolve(model.predictions("valid")) == model.predictions("valid")
    # Absent from both: the model's own path, so readers name the model's folder.
    assert model.resolve(model.label_issues) == model.label_issues
    model.training_log.write_text("own", encoding="utf-8")
    assert model.resolve(model.training_log) == model.training_log
    # Writers always get the own folder's path.
    assert model.scope_head.parent == model.directory
    # What to copy for the model to load elsewhere: its base's checkpoint and card too.
    assert model.model_files == (model.checkpoint, model.card, base.checkpoint, base.card)
    assert base.model_files == (base.checkpoint, base.card)
    # No base named (or a card naming the model itself): nothing is resolved elsewhere.
    assert base.base is None and base.resolve(base.duplicates) == base.duplicates
    _write_card(tmp_path / "model", {"name": "model", BASE_MODEL_KEY: "model"})
    assert model.base is None


def test_the_scope_head_of_a_model_without_one_is_its_bases(tmp_path: Path) -> None:
    shipped = SHIPPED_WEIGHTS_DIR / "mura_efficientnet_lite0" / "scope_head.npz"
    _write_card(tmp_path / "base", {"name": "base"})
    _write_card(tmp_path / "model", {"name": "model", BASE_MODEL_KEY: "base"})
    shutil.copyfile(shipped, tmp_path / "base" / "scope_head.npz")
    assert head_for(SimpleNamespace(directory=tmp_path / "model")) is not None
    _write_card(tmp_path / "model", {"name": "model"})
    assert head_for(SimpleNamespace(directory=tmp_path / "model")) is None


SHIPPED_DELTAS = [
    d.name
    for d in sorted(SHIPPED_WEIGHTS_DIR.iterdir())
    if (d / "model_card.json").is_file() and BASE_MODEL_KEY in json.loads((d / "model_card.json").read_text())
]


def test_the_fracture_model_ships_as_a_delta() -> None:
    assert "mura_efficientnet_lite0_fracture" in SHIPPED_DELTAS


@pytest.mark.parametrize("name", SHIPPED_DELTAS)
def test_a_shipped_delta_holds_no_copy_of_its_bases_files(name: str) -> None:
    files = ModelArtifacts(SHIPPED_WEIGHTS_DIR / name)
    base = files.base
    assert base is not None and base.checkpoint.is_file()
    assert files.checkpoint.stat().st_size < 8 * 2**20
    assert "base" in torch.load(files.checkpoint, map_location="cpu", weights_only=True)
    for file in MURA_PATH_FILES:
        own, shared = files.directory / file, base.directory / file
        assert not (own.is_file() and shared.is_file() and own.read_bytes() == shared.read_bytes()), file
    for path in (files.scope_head, files.scope_metrics, files.training_log, files.holdout_predictions):
        assert files.resolve(path).is_file(), path.name


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_DELTAS)
def test_a_shipped_deltas_mura_networks_are_its_bases_members(name: str) -> None:
    delta = load_model(name, directory=SHIPPED_WEIGHTS_DIR)
    base = load_model(ModelArtifacts(delta.directory).base.name, directory=SHIPPED_WEIGHTS_DIR)
    for ours, theirs in zip(delta.model.members, base.model.members, strict=True):
        mura, member = ours.mura.state_dict(), theirs.state_dict()
        assert mura.keys() == member.keys()
        assert all(torch.equal(mura[k], member[k]) for k in mura)


@pytest.mark.slow
def test_onnx_runs_the_delta_model_as_the_full_one(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("MURA_LENS_ONNX_CACHE", str(tmp_path / "onnx"))
    delta, full = load_model("two", directory=weights), load_model("full", directory=weights)
    inputs = model_inputs(delta, [synthetic_radiograph(seed, size=64) for seed in range(2)])
    onnx = batch_predictor(delta, "onnx")(inputs)
    assert onnx.shape == (2, 2)
    assert abs(onnx - batch_predictor(full, "torch")(inputs)).max() < 1e-4
