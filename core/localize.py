"""Sweep CAM methods x layers over a FracAtlas folder's outlined fractures and cache how well each
map points at them (``python -m core.localize --root DIR``).

The command line only; the library is :mod:`core.eval.localization_sweep`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from threadpoolctl import threadpool_limits

from core.cam.explain import METHODS
from core.cli import add_engine_arguments, add_n_boot_argument, engine_from_args
from core.data import fracatlas
from core.eval.localization_sweep import sweep
from core.model.checkpoint import DEFAULT_MODEL
from core.model.devices import DeviceError
from core.model.prediction import configure_threads
from core.model.registry import ModelLoadError
from core.model.scale import ScaleError
from core.store.artifacts import report_written


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.localize``; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m core.localize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="a FracAtlas folder (the one holding labels.csv)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a folder under weights/")
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help=f"CAM methods (default: every fast one); any of: {', '.join(METHODS)}",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        metavar="LAYER",
        help="layer names (default: every named layer on the explained output's path)",
    )
    parser.add_argument(
        "--target",
        choices=("abnormal", "normal", "fracture"),
        help="the output to explain (default: fracture for a model with that output, else abnormal)",
    )
    parser.add_argument("--limit", type=int, help="only the first N outlined images (a quick check)")
    add_n_boot_argument(parser)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (1 stays fast when other work shares the machine)"
    )
    add_engine_arguments(parser, precision=False, workers=False)
    args = parser.parse_args(argv)
    configure_threads(args.threads)

    def write() -> Sequence[Path]:
        engine = engine_from_args(args)
        root = fracatlas.resolve_root(args.root)
        with threadpool_limits(args.threads):  # numpy's SVDs (EigenCAM) stall when over-threaded
            return sweep(
                args.model,
                root,
                methods=args.methods,
                layers=args.layers,
                target=args.target,
                limit=args.limit,
                n_boot=args.n_boot,
                engine=engine,
            )

    return report_written(
        write, (fracatlas.FracAtlasError, ModelLoadError, DeviceError, ScaleError, OSError, ValueError)
    )


if __name__ == "__main__":
    sys.exit(main())
