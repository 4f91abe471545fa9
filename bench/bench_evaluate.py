"""Evaluation throughput end to end, torch against ONNX Runtime (core.model.backends), and each against
its bare batched inference (target >= 0.75x).

    python bench/bench_evaluate.py --mura-root PATH [--model NAME] [--split valid] [--limit N] [--rounds 3]

End to end is what core.evaluate does before its bootstrap: decode, letterbox, the forward passes
and writing the predictions CSV (core.store.artifacts.write_evaluation, into a temporary folder). The
bare path gets its inputs already decoded, so pipeline / bare is the cost of decoding and
bookkeeping. Both backends run the same images at the same batch size and thread count, in
interleaved rounds (torch, onnx, torch, onnx ...) so that load from other work falls on both alike;
each figure is its median round. The ONNX export is timed apart (paid once per set of weights, then
cached). Prints images/s, onnx / torch (adoption needs >= 1.5x), the largest probability difference
and how many written (6-decimal) probabilities differ, the load average and peak resident memory.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.data import mura
from core.data.imaging import load_radiograph
from core.eval.evaluation import predict_split
from core.model.backends import batch_predictor, onnx_model_path
from core.model.checkpoint import load_model
from core.model.prediction import configure_threads, model_inputs
from core.model.scale import Engine
from core.store.artifacts import ModelArtifacts, write_evaluation

from setup_line import model_bench_parser, setup_line  # bench/ is on sys.path when a bench script runs

BACKENDS = ("torch", "onnx")


def main() -> int:
    parser = model_bench_parser(__doc__, limit=96, limit_help="images per measurement (0 = the whole split)")
    args = parser.parse_args()
    configure_threads(args.threads)
    root = mura.resolve_root(args.mura_root)
    loaded = load_model(args.model)
    limit = args.limit or None
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["MURA_LENS_ONNX_CACHE"] = str(Path(scratch) / "onnx")  # a cold export, timed
        started = time.perf_counter()
        onnx_model_path(loaded)
        export_seconds = time.perf_counter() - started
        predictors = {backend: batch_predictor(loaded, backend) for backend in BACKENDS}

        images = mura.read_images(root, args.split).iloc[:limit]
        decoded = [load_radiograph(mura.image_file(root, p)).pixels for p in images["path"]]
        batches = [
            model_inputs(loaded, decoded[i : i + args.batch_size]) for i in range(0, len(decoded), args.batch_size)
        ]
        for predict in predictors.values():
            predict(batches[0])  # warm-up

        bare: dict[str, list[float]] = {b: [] for b in BACKENDS}
        pipeline: dict[str, list[float]] = {b: [] for b in BACKENDS}
        written: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for backend in BACKENDS:
                started = time.perf_counter()
                for batch in batches:
                    predictors[backend](batch)
                bare[backend].append(time.perf_counter() - started)
                files = ModelArtifacts(Path(scratch) / backend)
                files.directory.mkdir(exist_ok=True)
                started = time.perf_counter()
                table = predict_split(
                    loaded,
                    root,
                    args.split,
                    batch_size=args.batch_size,
                    progress=False,
                    limit=limit,
                    engine=Engine(backend=backend),
                )
                write_evaluation(files, args.split, table, {"bench": True}, force=True)
                pipeline[backend].append(time.perf_counter() - started)
                written[backend] = table["probability"].to_numpy()
                print(
                    f"round {len(pipeline[backend])} {backend}: end to end {pipeline[backend][-1]:.1f} s, "
                    f"bare {bare[backend][-1]:.1f} s, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )

    n = len(decoded)
    rate = {b: n / statistics.median(pipeline[b]) for b in BACKENDS}
    bare_rate = {b: n / statistics.median(bare[b]) for b in BACKENDS}
    gap = np.abs(written["onnx"] - written["torch"])
    print(setup_line(loaded))
    print(
        f"{n} images of {args.split}, batch {args.batch_size}, {args.threads} threads, {args.rounds} interleaved "
        f"rounds, median; load average before {load_before[0]:.2f} after {os.getloadavg()[0]:.2f}"
    )
    print(f"ONNX export (once per set of weights, then cached): {export_seconds:.1f} s")
    for backend in BACKENDS:
        print(
            f"{backend:5s}: end to end {rate[backend]:6.2f} img/s (decode + letterbox + inference + CSV); "
            f"bare {bare_rate[backend]:6.2f} img/s; ratio {rate[backend] / bare_rate[backend]:4.2f} (>= 0.75)"
        )
    print(
        f"onnx / torch end to end: x{rate['onnx'] / rate['torch']:.2f} (adoption needs >= 1.5); "
        f"bare x{bare_rate['onnx'] / bare_rate['torch']:.2f}"
    )
    print(
        f"written probabilities: max |onnx - torch| {gap.max():.1e}; {int((gap > 0).sum())} of {n} differ "
        "in the 6th decimal"
    )
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
