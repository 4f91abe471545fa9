"""The flags the command lines share, defined once: device and precision, backend, bootstrap
resamples, the scale-out engine (DataLoader workers, Ray), and a training recipe's numeric settings;
and how a command line ends on bad settings or data (one ``error:`` line, exit status 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable

from core.eval.metrics import DEFAULT_N_BOOT
from core.model.backends import BACKENDS, DEFAULT_BACKEND
from core.model.devices import DEVICES, PRECISIONS, resolve_device
from core.model.scale import Engine

__all__ = [
    "add_settings",
    "run_or_report",
    "add_backend_argument",
    "add_device_arguments",
    "add_engine_arguments",
    "add_n_boot_argument",
    "engine_from_args",
]


def add_settings(parser: argparse.ArgumentParser, config: type, names: Iterable[str], kind: type) -> None:
    """A ``--some-setting`` flag of type ``kind`` for each field ``some_setting`` of the dataclass
    ``config``, defaulting to the class's own value (the training CLIs' recipes)."""
    for name in names:
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(config, name))


def run_or_report(work: Callable[[], object]) -> int:
    """Run a command line's ``work``: 0, or 2 after one ``error:`` line on stderr, never a traceback."""
    try:
        work()
    except Exception as exc:  # noqa: BLE001 - a CLI prints one line, never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def add_n_boot_argument(parser: argparse.ArgumentParser) -> None:
    """The one ``--n-boot`` flag of every CLI that bootstraps (``--bootstrap``, its older name, still accepted)."""
    parser.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT, help="bootstrap resamples for the intervals")
    parser.add_argument("--bootstrap", dest="n_boot", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_backend_argument(parser: argparse.ArgumentParser, *, default: str = DEFAULT_BACKEND) -> None:
    """The ``--backend`` flag of the command lines that compute probabilities."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=default,
        help=f"what runs the forward passes (default {default}): onnx = ONNX Runtime on the CPU "
        "(the ensemble exported once, cached; ~3x faster), torch = eager PyTorch; onnx falls "
        "back to torch, saying why, without onnxruntime or on a GPU",
    )


def add_device_arguments(parser: argparse.ArgumentParser, *, precision: bool = True) -> None:
    """The ``--device`` (and ``--precision``) flags the inference command lines share; CAM sweeps
    take no precision (their gradients stay in fp32)."""
    parser.add_argument(
        "--device",
        default="cpu",
        choices=DEVICES,
        help="where the model runs (default cpu; cuda takes the first GPU CUDA_VISIBLE_DEVICES shows)",
    )
    if precision:
        parser.add_argument(
            "--precision",
            default="fp32",
            choices=PRECISIONS,
            help="autocast on a GPU: bf16 or fp16 (default fp32, the only choice on a CPU)",
        )


def add_engine_arguments(parser: argparse.ArgumentParser, *, precision: bool = True, workers: bool = True) -> None:
    """Device, DataLoader and Ray flags, shared by core.evaluate and core.localize (which has no
    precision, its gradients stay fp32, and no DataLoader: a CAM costs far more than decoding)."""
    add_device_arguments(parser, precision=precision)
    if workers:
        parser.add_argument(
            "--workers",
            type=int,
            default=0,
            help="DataLoader processes that decode images (default 0: one background thread)",
        )
    parser.add_argument(
        "--ray", action="store_true", help="run on Ray Data: an embedded local Ray unless --ray-address names a cluster"
    )
    parser.add_argument(
        "--ray-address", metavar="ADDR", help="an existing Ray cluster (e.g. ray://head:10001 or auto); implies --ray"
    )
    parser.add_argument(
        "--ray-actors",
        type=int,
        metavar="N",
        help="scoring actors (default: one per GPU with --device cuda, else one per 2 CPUs)",
    )


def engine_from_args(args: argparse.Namespace) -> Engine:
    """The Engine the parsed flags ask for, its device checked (raises core.model.devices.DeviceError)."""
    engine = Engine(
        device=args.device,
        precision=getattr(args, "precision", "fp32"),
        workers=getattr(args, "workers", 0),
        ray=args.ray or bool(args.ray_address),
        ray_address=args.ray_address,
        actors=args.ray_actors,
        backend=getattr(args, "backend", DEFAULT_BACKEND),
    )
    resolve_device(engine.device, engine.precision)
    return engine
