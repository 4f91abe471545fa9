"""Evaluation throughput: core.evaluate's pipeline vs bare batched inference (target >= 0.75x).

    python bench/bench_evaluate.py --mura-root PATH [--model NAME] [--split valid] [--limit N]

Both paths run the same model at the same batch size and thread count; the bare path gets its
inputs already decoded, so the ratio is the cost of decoding, letterboxing and bookkeeping.
Prints images/s for each, the ratio, and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

from core import mura
from core.evaluate import predict_split
from core.models import DEFAULT_MODEL, load_model
from core.predict import DEFAULT_BATCH_SIZE, DEFAULT_THREADS, configure_threads, model_inputs, predict_batch

from setup_line import setup_line  # bench/ is on sys.path when a bench script runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", default=os.environ.get("MURA_ROOT"), required=not os.environ.get("MURA_ROOT"))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--limit", type=int, default=160, help="images per measurement (0 = the whole split)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = parser.parse_args()
    configure_threads(args.threads)
    root = mura.resolve_root(args.mura_root)
    loaded = load_model(args.model)

    images = mura.read_images(root, args.split)
    if args.limit:
        images = images.iloc[: args.limit]
    from core.imaging import load_radiograph

    decoded = [load_radiograph(mura.image_file(root, p)).pixels for p in images["path"]]
    batches = [model_inputs(loaded, decoded[i : i + args.batch_size]) for i in range(0, len(decoded), args.batch_size)]
    predict_batch(loaded, batches[0])  # warm-up

    started = time.perf_counter()
    for batch in batches:
        predict_batch(loaded, batch)
    bare = len(decoded) / (time.perf_counter() - started)

    started = time.perf_counter()
    full = predict_split(loaded, root, args.split, batch_size=args.batch_size, progress=False, limit=args.limit or None)
    pipeline = len(full) / (time.perf_counter() - started)

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(setup_line(loaded))
    print(f"bare batched inference : {bare:6.2f} img/s (pre-decoded inputs, batch {args.batch_size})")
    print(f"core.evaluate pipeline : {pipeline:6.2f} img/s (decode + letterbox + inference, {len(full)} images)")
    print(f"ratio                  : {pipeline / bare:6.2f} (target >= 0.75)")
    print(f"peak memory            : {peak_mib:6.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
