"""Evaluation throughput and the localisation sweep's time on one GPU (run by bench/gpu_bench.sh).

    python bench/bench_gpu.py --mura-root .gpu/mura --fracatlas-root .gpu/fracatlas [--workers 8]

Prints, for the default model on MURA valid/ humerus and forearm: images/s on the GPU at fp32
(core.evaluate's batch and a large one, with DataLoader workers decoding), at bf16 and fp16
autocast with their largest probability difference from fp32 (autocast is worth using only
within 1e-3), the GPU's fp32 difference from the CPU on a few images, and the wall time of the
default CAM sweep (core.localize, eight methods x four layers) over every outlined image.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.data import fracatlas, mura
from core.eval.evaluation import predict_split
from core.eval.localization_sweep import fractured_images, sweep
from core.model.checkpoint import DEFAULT_MODEL, load_model
from core.model.prediction import DEFAULT_BATCH_SIZE
from core.model.scale import Engine
from core.store.artifacts import ModelArtifacts

from setup_line import setup_line  # bench/ is on sys.path when a bench script runs


def _rate(loaded, root: Path, engine: Engine, batch_size: int) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    rows = predict_split(loaded, root, "valid", batch_size=batch_size, progress=False, engine=engine)
    torch.cuda.synchronize()
    return len(rows) / (time.perf_counter() - started), rows["probability"].to_numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", required=True)
    parser.add_argument("--fracatlas-root", required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--large-batch", type=int, default=64)
    parser.add_argument("--sweep-limit", type=int, help="only the first N outlined images in the sweep")
    args = parser.parse_args()
    root = mura.resolve_root(args.mura_root)
    loaded = load_model(args.model)
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {os.cpu_count()} CPU cores")
    print(setup_line(loaded), flush=True)

    cpu_loaded = load_model(args.model)
    few = mura.read_images(root, "valid")
    cpu = predict_split(cpu_loaded, root, "valid", batch_size=DEFAULT_BATCH_SIZE, progress=False, limit=16)
    gpu = predict_split(
        loaded, root, "valid", batch_size=DEFAULT_BATCH_SIZE, progress=False, limit=16, engine=Engine(device="cuda")
    )  # also the warm-up (cuDNN's choice of kernels)
    print(
        f"fp32 GPU vs CPU on {len(cpu)} of {len(few)} images: max |dp| "
        f"{np.abs(gpu['probability'] - cpu['probability']).max():.1e}",
        flush=True,
    )

    rate, _ = _rate(loaded, root, Engine(device="cuda"), DEFAULT_BATCH_SIZE)
    print(f"fp32, batch {DEFAULT_BATCH_SIZE}, one prefetch thread : {rate:7.1f} img/s", flush=True)
    fp32_rate, fp32 = _rate(loaded, root, Engine(device="cuda", workers=args.workers), args.large_batch)
    print(f"fp32, batch {args.large_batch}, {args.workers} DataLoader workers : {fp32_rate:7.1f} img/s", flush=True)
    for precision in ("bf16", "fp16"):
        rate, probability = _rate(
            loaded, root, Engine(device="cuda", precision=precision, workers=args.workers), args.large_batch
        )
        gap = float(np.abs(probability - fp32).max())
        print(
            f"{precision}, batch {args.large_batch}, {args.workers} workers : {rate:7.1f} img/s "
            f"x{rate / fp32_rate:4.2f}  max |dp| vs fp32 {gap:.1e} ({'within' if gap <= 1e-3 else 'OVER'} 1e-3)",
            flush=True,
        )

    fracatlas_root = fracatlas.resolve_root(args.fracatlas_root)
    images = len(fractured_images(fracatlas_root)[0])
    with tempfile.TemporaryDirectory() as weights:
        # A fresh folder holding only the model: the sweep starts from nothing and leaves the repo alone.
        for path in ModelArtifacts(loaded.directory).model_files:
            (Path(weights) / path.parent.name).mkdir(exist_ok=True)
            shutil.copyfile(path, Path(weights) / path.parent.name / path.name)
        os.environ["MURA_LENS_WEIGHTS_DIR"] = weights
        started = time.perf_counter()
        sweep(
            args.model, fracatlas_root, limit=args.sweep_limit, n_boot=200, progress=False, engine=Engine(device="cuda")
        )
        seconds = time.perf_counter() - started
    done = min(images, args.sweep_limit or images)
    print(
        f"localisation sweep (default methods x every layer) on {done} outlined images: {seconds:.1f} s, "
        f"{seconds / done:.3f} s per image",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
