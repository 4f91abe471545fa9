"""Where inference runs: the ``--device`` and ``--precision`` flags of the command-line tools.

A model is loaded on the CPU (checkpoints are stored there) and moved once; each batch moves to
the model's device just before its forward pass, so decoding and letterboxing stay on CPU cores
(DataLoader workers or Ray tasks) and feed the accelerator. A device that is absent is refused
with one sentence naming what to use instead, never a CUDA traceback halfway through a run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import torch

from core.model.checkpoint import LoadedModel

__all__ = ["DEVICES", "PRECISIONS", "DeviceError", "resolve_device", "on_device", "model_device", "autocast"]

DEVICES = ("cpu", "cuda", "mps")
#: fp32 is exact; bf16 and fp16 autocast are for GPUs, where the bench checks they stay within
#: 1e-3 of fp32 (bench/gpu_bench.sh); on a CPU they are refused (slower there, and no faster path).
PRECISIONS = ("fp32", "bf16", "fp16")


class DeviceError(RuntimeError):
    """The requested device or precision is not available here (one sentence)."""


def resolve_device(name: str, precision: str = "fp32") -> torch.device:
    """The torch device for ``name``, checked to exist, and checked to support ``precision``.

    Raises:
        DeviceError: the device is absent (no GPU, a CPU-only torch build) or the precision
        does not apply to it.
    """
    if name not in DEVICES:
        raise DeviceError(f"Unknown device {name!r}; choose one of {', '.join(DEVICES)}.")
    if precision not in PRECISIONS:
        raise DeviceError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if name == "cuda" and not torch.cuda.is_available():
        build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise DeviceError(f"--device cuda: {build} (torch {torch.__version__}); run with --device cpu.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(
            f"--device mps: Apple's Metal backend is not available here (torch {torch.__version__}); "
            "run with --device cpu."
        )
    if name == "cpu" and precision != "fp32":
        raise DeviceError(f"--precision {precision} is for GPUs; on the CPU use fp32.")
    if name == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceError("--precision bf16: this GPU has no bf16; use fp16 or fp32.")
    return torch.device(name)


def on_device(loaded: LoadedModel, device: torch.device) -> LoadedModel:
    """``loaded`` with its model on ``device`` (the same object when it is already there)."""
    if model_device(loaded).type == device.type:
        return loaded
    return replace(loaded, model=loaded.model.to(device))


def model_device(loaded: LoadedModel) -> torch.device:
    """The device the model's weights are on."""
    return next(loaded.model.parameters()).device


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast for ``precision`` on ``device`` (fp32: nothing). Thread-local: enter it in the
    thread (or Ray actor) that runs the forward passes."""
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device.type, dtype=dtype):
        yield
