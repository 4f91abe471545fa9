"""Can the heat maps be trusted? Sanity checks, faithfulness and how far the metrics agree, over a
fixed sample of radiographs (``python -m core.trust --mura-root PATH [--fracatlas-root DIR]``).

The command line only; the library is :mod:`core.eval.trust`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from threadpoolctl import threadpool_limits

from core.cli import add_n_boot_argument
from core.data import fracatlas, mura
from core.eval.trust import DEFAULT_FRACATLAS_N, DEFAULT_PER_PART, sweep
from core.model.checkpoint import DEFAULT_MODEL
from core.model.prediction import configure_threads
from core.model.registry import ModelLoadError
from core.store.artifacts import report_written


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.trust``; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m core.trust", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", help="a MURA-v1.1 folder (valid/ is sampled)")
    parser.add_argument("--fracatlas-root", help="a FracAtlas folder (upper-limb images are sampled)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a folder under weights/")
    parser.add_argument(
        "--target",
        choices=("abnormal", "fracture"),
        help="the output whose maps are checked (default: fracture for a model with that output, else abnormal); "
        "on fracture the FracAtlas sample leaves out every image that output trained on",
    )
    parser.add_argument(
        "--per-part",
        type=int,
        default=DEFAULT_PER_PART,
        help="MURA valid/ studies per trained body part, one view each",
    )
    parser.add_argument("--fracatlas-n", type=int, default=DEFAULT_FRACATLAS_N, help="FracAtlas upper-limb images")
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help="CAM methods with a layer (default: core.localize's default sweep less KPCA-CAM)",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        metavar="LAYER",
        help="layers compared (default: the default layer and the middle named one)",
    )
    parser.add_argument(
        "--faithfulness-layers",
        nargs="+",
        metavar="LAYER",
        help="layers whose maps are also scored for faithfulness (default: the default layer)",
    )
    parser.add_argument(
        "--road",
        action="store_true",
        help="also ROAD per map (8 noisy linear imputations each: several times the run's time)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the sample and the randomised weights")
    add_n_boot_argument(parser)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 leaves the machine to others)")
    args = parser.parse_args(argv)
    configure_threads(args.threads)

    def write() -> Sequence[Path]:
        mura_root = mura.resolve_root(args.mura_root) if args.mura_root else None
        fracatlas_root = fracatlas.resolve_root(args.fracatlas_root) if args.fracatlas_root else None
        with threadpool_limits(args.threads):
            return sweep(
                args.model,
                mura_root=mura_root,
                fracatlas_root=fracatlas_root,
                per_part=args.per_part,
                fracatlas_n=args.fracatlas_n,
                methods=args.methods,
                layers=args.layers,
                faithfulness_layers=args.faithfulness_layers,
                road=args.road,
                n_boot=args.n_boot,
                seed=args.seed,
                target=args.target,
            )

    return report_written(write, (mura.MuraRootError, fracatlas.FracAtlasError, ModelLoadError, OSError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
