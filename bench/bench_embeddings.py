"""Where ``python -m core.embeddings`` spends its time, stage by stage, on a small subset.

    python bench/bench_embeddings.py --mura-root PATH --fracatlas-root PATH [--limit 64] [--points 4800]

Per image: decode (core.data.imaging), perceptual hash, letterbox + normalise, one member's forward at
each thread count and batch size asked for, and FracAtlas's copy thumbnails (core.data.fracatlas);
then the build stages on ``--points`` synthetic 50-d vectors: UMAP (first call, with numba
compilation, and a second), PCA, nearest studies and the duplicate audit. Prints wall and process
CPU seconds for each, so a figure taken on a shared machine can be read as CPU time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd
import torch

from core.data import fracatlas, mura
from core.data.imaging import load_radiograph
from core.datamap import embeddings
from core.model.checkpoint import DEFAULT_MODEL, load_model
from core.model.prediction import configure_threads, model_inputs
from core.scoping.head import network_features

from setup_line import setup_line  # bench/ is on sys.path when a bench script runs


class Stage:
    """Wall and process-CPU seconds of a block, printed per item when ``items`` is given."""

    def __init__(self, name: str, items: int = 0) -> None:
        self.name, self.items = name, items

    def __enter__(self) -> Stage:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_exc) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        per = (
            f"  ({1000 * wall / self.items:.1f} ms wall, {1000 * cpu / self.items:.1f} ms CPU per item)"
            if self.items
            else ""
        )
        print(f"{self.name:<48} {wall:8.2f} s wall {cpu:8.2f} s CPU{per}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", default=os.environ.get("MURA_ROOT"), required=not os.environ.get("MURA_ROOT"))
    parser.add_argument("--fracatlas-root", required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--limit", type=int, default=64, help="images per dataset")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--points", type=int, default=4800, help="synthetic points for the build stages (0: skip)")
    args = parser.parse_args()
    loaded = load_model(args.model)
    print(setup_line(loaded), f"load average {os.getloadavg()}")
    root, atlas_root = mura.resolve_root(args.mura_root), fracatlas.resolve_root(args.fracatlas_root)
    train = mura.read_images(root, "train")
    train = train[train["study_type"].isin(("XR_HUMERUS", "XR_FOREARM"))].sample(args.limit, random_state=0)
    atlas = fracatlas.read_images(atlas_root).sample(args.limit, random_state=0)
    sets = {
        "mura": [mura.image_file(root, p) for p in train["path"]],
        "fracatlas": [fracatlas.image_file(atlas_root, f) for f in atlas["file"]],
    }
    member = embeddings._members(loaded)[0]
    for name, files in sets.items():
        for f in files:  # warm the page cache: the stages below measure decoding, not the disk
            f.read_bytes()
        with Stage(f"{name}: decode", len(files)):
            pixels = [load_radiograph(f).pixels for f in files]
        with Stage(f"{name}: perceptual hash", len(files)):
            [embeddings._phash(p) for p in pixels]
        with Stage(f"{name}: letterbox + normalise", len(files)):
            batch = model_inputs(loaded, pixels)
        for threads in args.threads:
            configure_threads(threads)
            for size in args.batch_sizes:
                network_features(member, batch[:size])  # warm-up
                with Stage(f"{name}: forward, {threads} thread(s), batch {size}", len(files)):
                    for i in range(0, len(files), size):
                        network_features(member, batch[i : i + size])
        if name == "fracatlas":
            with Stage("fracatlas: copy thumbnails (duplicate_groups)", len(files)):
                fracatlas.duplicate_groups(atlas_root, atlas["file"].tolist())
    if args.points:
        rng = np.random.default_rng(0)
        features = np.abs(rng.normal(size=(args.points, 50))).astype(np.float32)
        studies = pd.Series([f"s{i // 2}" for i in range(args.points)])
        with Stage("UMAP, first call (numba compilation)"):
            embeddings.project(features[:200], method="umap")
        with Stage(f"UMAP, {args.points} points"):
            embeddings.project(features, method="umap")
        with Stage(f"PCA, {args.points} points"):
            embeddings.project(features, method="pca")
        with Stage("nearest studies"):
            embeddings.nearest_studies(features, studies)
        from core.datamap.audit import audit_duplicates

        images = pd.DataFrame(
            {
                "dataset": "mura_train",
                "key": [f"k{i}" for i in range(args.points)],
                "study": studies,
                "patient": [f"p{i}" for i in range(args.points)],
            }
        )
        with Stage("duplicate audit"):
            audit_duplicates(images, rng.integers(0, 2, (args.points, 64)).astype(bool), features)
    print(f"torch {torch.__version__}; load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
