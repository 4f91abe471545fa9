"""Evaluate a shipped model on a MURA split, or on FracAtlas as an external set, and cache the
results for the dashboard.

The command line only; the library is :mod:`core.eval.evaluation`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli import add_backend_argument, add_engine_arguments, add_n_boot_argument, engine_from_args
from core.data import fracatlas, mura
from core.eval.evaluation import FRACATLAS, evaluate, evaluate_fracatlas
from core.model.checkpoint import DEFAULT_MODEL
from core.model.devices import DeviceError
from core.model.prediction import DEFAULT_BATCH_SIZE, DEFAULT_THREADS, configure_threads
from core.model.registry import ModelLoadError
from core.model.scale import ScaleError
from core.store.artifacts import report_written


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.evaluate``; returns the exit status (2 when the evaluation cannot be written)."""
    parser = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        choices=("mura", FRACATLAS),
        default="mura",
        help="mura (default): a split of --mura-root; fracatlas: every image of --root",
    )
    parser.add_argument("--mura-root", help="the MURA-v1.1 folder (for --dataset mura)")
    parser.add_argument("--split", choices=mura.SPLITS, default="valid")
    parser.add_argument("--root", help="a FracAtlas folder holding labels.csv (for --dataset fracatlas)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a folder under weights/")
    add_n_boot_argument(parser)
    parser.add_argument(
        "--force", action="store_true", help="replace a cached evaluation even when it covers more images than this one"
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    add_backend_argument(parser)
    add_engine_arguments(parser)
    args = parser.parse_args(argv)
    if args.dataset == FRACATLAS and not args.root:
        parser.error("--dataset fracatlas needs --root DIR (the folder holding labels.csv)")
    if args.dataset == "mura" and not args.mura_root:
        parser.error("--mura-root is required (or use --dataset fracatlas --root DIR)")
    configure_threads(args.threads)

    def write() -> Sequence[Path]:
        engine = engine_from_args(args)
        if args.dataset == FRACATLAS:
            return evaluate_fracatlas(
                args.model,
                fracatlas.resolve_root(args.root),
                n_boot=args.n_boot,
                batch_size=args.batch_size,
                force=args.force,
                engine=engine,
            )
        return evaluate(
            args.model,
            mura.resolve_root(args.mura_root),
            args.split,
            n_boot=args.n_boot,
            batch_size=args.batch_size,
            force=args.force,
            engine=engine,
        )

    return report_written(
        write,
        (mura.MuraRootError, fracatlas.FracAtlasError, ModelLoadError, DeviceError, ScaleError, OSError, ValueError),
    )


if __name__ == "__main__":
    sys.exit(main())
