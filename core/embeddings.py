"""Embeddings of every evaluated radiograph: features, a 2-D map and nearest neighbours, cached offline.

The command line only; the library is :mod:`core.datamap.embeddings`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from core.datamap.embeddings import build_data_map
from core.model.checkpoint import DEFAULT_MODEL


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.embeddings``: extract, project, find neighbours, audit labels and duplicates."""
    parser = argparse.ArgumentParser(prog="python -m core.embeddings", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", required=True, help="the MURA-v1.1 folder (train/ and valid/)")
    parser.add_argument("--fracatlas-root", required=True, help="the FracAtlas folder core.evaluate scored")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--projection", choices=("umap", "pca"), default="umap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("runs/embeddings"),
        help="folder for the resumable per-member feature chunks (no pixels)",
    )
    parser.add_argument(
        "--fracatlas-files",
        type=Path,
        help="a text file naming the FracAtlas files to embed, one a line (default: every scored one)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="forward passes run at once, each on one torch thread (default: one per core)",
    )
    args = parser.parse_args(argv)
    summary = build_data_map(
        args.model,
        args.mura_root,
        args.fracatlas_root,
        projection=args.projection,
        seed=args.seed,
        cache=args.cache,
        fracatlas_files=args.fracatlas_files,
        workers=args.threads,
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
