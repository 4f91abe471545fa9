"""Fitting the scope head (core.scope) and measuring it: out of fold on train/, then on MURA valid/,
FracAtlas and images that are not radiographs.

The command line only; the library is :mod:`core.scoping.fit` (which needs scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli import add_n_boot_argument
from core.model.checkpoint import DEFAULT_MODEL
from core.scoping.fit import fit_and_measure
from core.scoping.head import FEATURE_SOURCES


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.scope``: fit the head, measure it, and write both to the model's folder."""
    parser = argparse.ArgumentParser(prog="python -m core.scope", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", required=True, help="the MURA-v1.1 folder (train/ fits; valid/ is measured)")
    parser.add_argument("--fracatlas-root", required=True, help="a FracAtlas folder (hand, shoulder, leg/hip)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument(
        "--per-class",
        type=int,
        default=500,
        help="at most this many training images per class (seeded sample): a linear head on "
        "1280 features needs no more, and every image costs a forward",
    )
    parser.add_argument(
        "--features",
        choices=FEATURE_SOURCES,
        default="model",
        help="model: the classifier's own pooled features; imagenet: the same architecture's "
        "ImageNet features (not tuned to MURA's look)",
    )
    parser.add_argument(
        "--feature-cache",
        type=Path,
        default=Path("runs/scope_features"),
        help="folder for cached features (no pixels), so a refit skips the forwards",
    )
    add_n_boot_argument(parser)
    args = parser.parse_args(argv)
    metrics, files = fit_and_measure(
        args.model,
        args.mura_root,
        args.fracatlas_root,
        per_class=args.per_class,
        features=args.features,
        feature_cache=args.feature_cache,
        n_boot=args.n_boot,
    )
    print(json.dumps(metrics["summary"], indent=2))
    print(f"wrote {files.scope_head} and {files.scope_metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
