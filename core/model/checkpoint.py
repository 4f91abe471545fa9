"""Checkpoints of the registered architectures: read, checked and written.

Checkpoints are read with ``torch.load(weights_only=True)`` (a pickle cannot run code) and checked
against the architecture before use, so a corrupt or foreign file is one :class:`ModelLoadError`
sentence naming it, never a traceback.

A two-output model is stored as a *delta* on its base ensemble (:func:`save_fracture_checkpoint`): its
checkpoint holds each member's fracture branch, the base model's name and the SHA-256 of the base's
checkpoint file; loading joins the base's members (the MURA networks, unchanged) with the branches,
so the MURA weights are stored once in the repository.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.model.card import ModelCardError, card_thresholds, read_card, threshold_for
from core.model.fracture_net import TwoOutputNet, branch_state, joined_state
from core.model.registry import (
    FRACTURE,
    MeanProbabilityEnsemble,
    ModelConfig,
    ModelLoadError,
    create_model,
    get_config,
    list_architectures,
)
from core.store import atomic
from core.store.artifacts import (
    BASE_MODEL_KEY,
    CARD_FILE,
    CHECKPOINT_FILE,
    ModelArtifacts,
    display_name,
    is_model_name,
    weights_dir,
)

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "list_shipped_models",
    "check_model",
    "load_model",
    "save_checkpoint",
    "save_ensemble_checkpoint",
    "save_fracture_checkpoint",
    "file_sha256",
]


DEFAULT_MODEL = "mura_efficientnet_lite0_fracture"


@dataclass
class LoadedModel:
    """A ready-to-run model in eval mode with its config, input size and model card."""

    name: str
    model: nn.Module
    config: ModelConfig
    input_size: int
    card: dict[str, Any]
    directory: Path

    @property
    def cam_layers(self) -> dict[str, str]:
        """Layer choices offered to users: a readable name -> dotted path in the architecture."""
        return self.config.cam_layers

    @property
    def named_layers(self) -> tuple[str, ...]:
        """Every convolution of the network by its module path (an ensemble's first member's, which all
        members share): the layers a user may name beyond the :attr:`cam_layers` presets."""
        network = self.model.members[0] if isinstance(self.model, MeanProbabilityEnsemble) else self.model
        return tuple(name for name, module in network.named_modules() if isinstance(module, nn.Conv2d))

    def is_layer(self, name: str) -> bool:
        """Whether ``name`` is a preset (:attr:`cam_layers`) or a convolution's path (:attr:`named_layers`)."""
        return name in self.cam_layers or name in self.named_layers

    def layer_paths(self, name: str) -> tuple[str, ...]:
        """Module paths in ``self.model`` behind a layer choice (a preset name or a convolution's path):
        one per ensemble member."""
        path = self.cam_layers.get(name, name)
        if isinstance(self.model, MeanProbabilityEnsemble):
            return tuple(f"members.{i}.{path}" for i in range(len(self.model.members)))
        return (path,)

    def threshold_for(self, study_type: str | None) -> float:
        """Operating threshold for a body part, chosen on train's patient-level validation split."""
        return threshold_for(card_thresholds(self.card), study_type)

    @property
    def outputs(self) -> tuple[str, ...]:
        """What each output column means: ("abnormal",) or ("abnormal", "fracture")."""
        return self.config.outputs

    @property
    def fracture_threshold(self) -> float | None:
        """The fracture output's threshold (chosen on FracAtlas training folds), None without that output."""
        return float(self.card["fracture_threshold"]) if FRACTURE in self.outputs else None


def list_shipped_models(directory: Path | None = None) -> list[str]:
    """Model folders that hold both a checkpoint and a card."""
    directory = directory or weights_dir()
    if not directory.is_dir():
        return []
    return sorted(d.name for d in directory.iterdir() if (d / CHECKPOINT_FILE).is_file() and (d / CARD_FILE).is_file())


def _model_files(name: str, directory: Path | None) -> ModelArtifacts:
    if not is_model_name(name):
        raise ModelLoadError(f"{name!r} is not a model name.")
    files = ModelArtifacts.of(name, directory)
    if not files.checkpoint.is_file():
        raise ModelLoadError(f"No checkpoint at {files.checkpoint}.")
    return files


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A weights-only checkpoint with its tensors, checked for the layout save_checkpoint writes."""
    name = display_name(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # Any exception: on arbitrary bytes torch's weights-only unpickler raises whatever it meets
    # (UnpicklingError, EOFError, IndexError, KeyError, ...); none of them runs code from the file.
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"The checkpoint {name} cannot be read ({type(exc).__name__}); it is damaged or not a PyTorch weights file."
        ) from exc
    if not isinstance(checkpoint, dict):
        raise ModelLoadError(
            f"The checkpoint {name} holds a {type(checkpoint).__name__}, not the weights dictionary core.train writes."
        )
    states = (
        checkpoint.get("branches")
        if "base" in checkpoint
        else checkpoint.get("members", [checkpoint.get("state_dict")])
    )
    if (
        not isinstance(states, list)
        or not states
        or not all(
            isinstance(state, dict)
            and state
            and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items())
            for state in states
        )
    ):
        raise ModelLoadError(f"The checkpoint {name} has no state_dict (or members, or branches) of named tensors.")
    base = checkpoint.get("base")
    if base is not None and not (
        isinstance(base, dict)
        and isinstance(base.get("model"), str)
        and is_model_name(base["model"])
        and isinstance(base.get("sha256"), str)
        and len(base["sha256"]) == 64
    ):
        raise ModelLoadError(f"The checkpoint {name} names its base model without a model name and a SHA-256.")
    if not isinstance(checkpoint.get("input_size", 1), int):
        raise ModelLoadError(f"The checkpoint {name} gives an input size that is not a whole number.")
    return checkpoint


def _architecture(checkpoint: dict[str, Any], card: dict[str, Any], files: ModelArtifacts) -> ModelConfig:
    arch = checkpoint.get("arch") or card.get("architecture")
    if not isinstance(arch, str):
        raise ModelLoadError(
            f"Neither {display_name(files.checkpoint)} nor {display_name(files.card)} names an architecture."
        )
    if arch not in list_architectures():
        raise ModelLoadError(
            f"The checkpoint {display_name(files.checkpoint)} is for the architecture {arch!r}, "
            f"which is not one of {', '.join(list_architectures())}."
        )
    return get_config(arch)


def _check_fits(
    expected: dict[str, torch.Tensor], states: list[dict[str, torch.Tensor]], path: Path, arch: str
) -> None:
    """Every member's tensors have the names and shapes of the architecture's (what load_state_dict needs)."""
    for state in states:
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        reshaped = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
        if missing or unexpected or reshaped:
            example = (missing or unexpected or reshaped)[0]
            raise ModelLoadError(
                f"The checkpoint {display_name(path)} does not fit the {arch} architecture ({len(missing)} "
                f"missing, {len(unexpected)} unexpected and {len(reshaped)} wrongly shaped tensors, "
                f"first {example!r})."
            )


def _read_model_files(name: str, directory: Path | None) -> tuple[ModelArtifacts, dict, dict, ModelConfig]:
    files = _model_files(name, directory)
    try:
        card = read_card(files.card)
    except ModelCardError as exc:
        raise ModelLoadError(str(exc)) from exc
    checkpoint = _read_checkpoint(files.checkpoint)
    if "base" in checkpoint:
        checkpoint = _joined_with_base(checkpoint, card, files)
    config = _architecture(checkpoint, card, files)
    if FRACTURE in config.outputs and not _is_probability(card.get("fracture_threshold")):
        raise ModelLoadError(
            f"The model card {display_name(files.card)} gives no fracture_threshold between 0 "
            f"and 1, which the {config.name} architecture's fracture output needs."
        )
    _calibration(card, config, files)  # a damaged calibration is refused before any weight is read
    return files, card, checkpoint, config


#: The card field holding the fracture output's Platt scaling (core.model.fracture_model.calibrate_card).
CALIBRATION_KEY = "fracture_calibration"


def _calibration(card: dict, config: ModelConfig, files: ModelArtifacts) -> dict[int, tuple[float, float]]:
    """Output column -> (slope, intercept) of the card's Platt scaling of the fracture output; {} without one."""
    entry = card.get(CALIBRATION_KEY)
    if entry is None or FRACTURE not in config.outputs:
        return {}
    raw = [entry.get(key) if isinstance(entry, dict) else None for key in ("slope", "intercept")]
    numbers = [float(n) for n in raw if isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n)]
    if len(numbers) != 2:
        raise ModelLoadError(
            f"The model card {display_name(files.card)} gives a {CALIBRATION_KEY} without a finite slope and intercept."
        )
    slope, intercept = numbers
    if slope <= 0:
        raise ModelLoadError(
            f"The model card {display_name(files.card)} gives a {CALIBRATION_KEY} slope that is not positive."
        )
    return {config.outputs.index(FRACTURE): (slope, intercept)}


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks (a checkpoint is tens of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _joined_with_base(delta: dict[str, Any], card: dict[str, Any], files: ModelArtifacts) -> dict[str, Any]:
    """A delta checkpoint as a full one: each base member's state joined with its branch, after checking
    that the base is the very file the branches were trained on (its SHA-256)."""
    name, base_name = display_name(files.checkpoint), delta["base"]["model"]
    base = ModelArtifacts(files.directory.parent / base_name)
    if card.get(BASE_MODEL_KEY) != base_name:
        raise ModelLoadError(
            f"The checkpoint {name} is built on the model {base_name!r} but its card names "
            f"{card.get(BASE_MODEL_KEY)!r} as its base; reassemble the model."
        )
    if not base.checkpoint.is_file():
        raise ModelLoadError(
            f"The checkpoint {name} holds only fracture branches for the model {base_name!r}, "
            f"whose checkpoint {display_name(base.checkpoint)} is missing."
        )
    if file_sha256(base.checkpoint) != delta["base"]["sha256"]:
        raise ModelLoadError(
            f"The checkpoint {name} was built on another version of {display_name(base.checkpoint)} "
            "(its SHA-256 differs), so its fracture branches do not fit the members there; "
            "restore that checkpoint or reassemble the model."
        )
    full, branches = _read_checkpoint(base.checkpoint), delta["branches"]
    members = [] if "base" in full else _states(full)
    if len(members) != len(branches):
        raise ModelLoadError(
            f"The checkpoint {name} holds {len(branches)} fracture branches, which the {len(members)} full "
            f"members of {display_name(base.checkpoint)} cannot carry."
        )
    joined = [joined_state(m, b) for m, b in zip(members, branches, strict=True)]
    return {k: v for k, v in delta.items() if k in ("arch", "input_size")} | {"members": joined}


def _is_probability(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0


def _states(checkpoint: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
    return checkpoint["members"] if "members" in checkpoint else [checkpoint["state_dict"]]


def check_model(name: str = DEFAULT_MODEL, *, directory: Path | None = None) -> None:
    """Everything :func:`load_model` checks, without building the network (its shapes come from
    the meta device), so pages that only read caches can refuse a broken model cheaply.

    Raises:
        ModelLoadError: one sentence naming the file at fault.
    """
    files, _card, checkpoint, config = _read_model_files(name, directory)
    with torch.device("meta"):
        expected = create_model(config.name, pretrained=False).state_dict()
    _check_fits(expected, _states(checkpoint), files.checkpoint, config.name)


def load_model(name: str = DEFAULT_MODEL, *, directory: Path | None = None) -> LoadedModel:
    """Load ``<weights dir>/name/checkpoint.pt`` and the model card beside it, in eval mode.

    Raises:
        ModelLoadError: a file is missing, damaged or does not fit the architecture (one sentence).
    """
    files, card, checkpoint, config = _read_model_files(name, directory)
    members = []
    for state in _states(checkpoint):
        member = create_model(config.name, pretrained=False)
        _check_fits(member.state_dict(), [state], files.checkpoint, config.name)
        member.load_state_dict({k: v.float() for k, v in state.items()})
        members.append(member)
    calibration = _calibration(card, config, files)
    model = members[0] if len(members) == 1 and not calibration else MeanProbabilityEnsemble(members, calibration)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    input_size = int(checkpoint.get("input_size", config.input_size))
    return LoadedModel(name, model, config, input_size, card, files.directory)


def _storable(model: nn.Module, half: bool) -> dict[str, torch.Tensor]:
    # On the CPU, so a checkpoint written on a GPU loads anywhere.
    return {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, model: nn.Module, arch: str, input_size: int, *, half: bool = True) -> None:
    """Write a weights-only checkpoint atomically (fp16 storage keeps it small)."""
    atomic.save_torch({"arch": arch, "input_size": input_size, "state_dict": _storable(model, half)}, path)


def save_ensemble_checkpoint(
    path: Path, members: list[nn.Module], arch: str, input_size: int, *, half: bool = True
) -> None:
    """Write several members of one architecture as one checkpoint, loaded as an ensemble."""
    states = [_storable(member, half) for member in members]
    atomic.save_torch({"arch": arch, "input_size": input_size, "members": states}, path)


def save_fracture_checkpoint(
    path: Path, nets: list[TwoOutputNet], arch: str, input_size: int, base: ModelArtifacts, *, half: bool = True
) -> None:
    """Write two-output networks as a delta on ``base``: their fracture branches, the base's name and
    its checkpoint's SHA-256 (see the module's docstring).

    Raises:
        ValueError: a network's MURA part is not, tensor for tensor, the matching member stored in
        ``base``'s checkpoint (the delta would load another network than ``nets``).
    """
    full = _read_checkpoint(base.checkpoint)
    members = [] if "base" in full else _states(full)
    if len(members) != len(nets):
        raise ValueError(f"{display_name(base.checkpoint)} does not hold {len(nets)} full members to build on.")
    for k, (net, member) in enumerate(zip(nets, members, strict=True)):
        mura = _storable(net.mura, half)
        if mura.keys() != member.keys() or not all(
            mura[key].dtype == member[key].dtype and torch.equal(mura[key], member[key]) for key in mura
        ):
            raise ValueError(f"Network {k}'s MURA part is not member {k} of {display_name(base.checkpoint)}.")
    branches = [branch_state(_storable(net, half)) for net in nets]
    base_ref = {"model": base.name, "sha256": file_sha256(base.checkpoint)}
    atomic.save_torch({"arch": arch, "input_size": input_size, "base": base_ref, "branches": branches}, path)
