"""Embeddings of every evaluated radiograph: features, a 2-D map and nearest neighbours, cached offline.

The command line only; the library is :mod:`core.datamap.embeddings`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from core.datamap.embeddings import build, extract, image_sets, known_copies, write_cache
from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import ModelArtifacts


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.embeddings``: extract, project, find neighbours, audit labels and duplicates."""
    parser = argparse.ArgumentParser(prog="python -m core.embeddings", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", required=True, help="the MURA-v1.1 folder (train/ and valid/)")
    parser.add_argument("--fracatlas-root", required=True, help="the FracAtlas folder core.evaluate scored")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--projection", choices=("umap", "pca"), default="umap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("runs/embeddings"),
                        help="folder for the resumable per-member feature chunks (no pixels)")
    parser.add_argument("--fracatlas-files", type=Path,
                        help="a text file naming the FracAtlas files to embed, one a line (default: every scored one)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="forward passes run at once, each on one torch thread (default: one per core)")
    args = parser.parse_args(argv)
    from core.data import fracatlas, mura
    from core.model.checkpoint import load_model
    from core.model.prediction import configure_threads

    configure_threads(1)  # parallel single-thread workers instead (see extract)
    loaded = load_model(args.model)
    files = ModelArtifacts(loaded.directory)
    atlas_root = fracatlas.resolve_root(args.fracatlas_root)
    atlas_files = set(args.fracatlas_files.read_text().split()) if args.fracatlas_files else None
    sets, rows = image_sets(loaded, mura.resolve_root(args.mura_root), atlas_root, atlas_files)
    started = time.perf_counter()
    extracted = extract(loaded, sets, args.cache / loaded.name, workers=args.threads)
    extract_seconds = time.perf_counter() - started
    embeddings, raw = build(extracted, rows, method=args.projection, seed=args.seed)
    atlas_keys = embeddings.images.loc[embeddings.images["dataset"] == "fracatlas", "key"].tolist()
    known = known_copies(files, atlas_root, atlas_keys, subset=atlas_files is not None)
    summary = write_cache(files, embeddings, raw, known, extract_seconds=extract_seconds)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
