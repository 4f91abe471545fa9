"""core.evaluate's prediction, single process vs DataLoader workers vs an embedded local Ray,
on the same images in one run (and the same results: checked here).

    python bench/bench_scale.py --mura-root PATH [--model NAME] [--limit 64] [--device cpu] [--workers 2]

Prints images/s of each path, its ratio to the single-process path, and Ray's start-up time
(paid once per command, not per image). On a laptop Ray cannot beat the single process, which
already keeps both cores busy: the ratio measures its overhead. On a cluster or a GPU machine the
same command spreads decoding over every core and scoring over every GPU.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from core.data import mura
from core.eval.evaluation import predict_split
from core.model.checkpoint import load_model
from core.model.devices import on_device, resolve_device
from core.model.prediction import configure_threads
from core.model.scale import Engine, import_ray

from setup_line import model_bench_parser, setup_line  # bench/ is on sys.path when a bench script runs


def main() -> int:
    parser = model_bench_parser(__doc__, limit=64, limit_help="images per path (0 = the whole split)", rounds=False)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader processes of the second path")
    parser.add_argument("--ray-actors", type=int, help="scoring actors (default: core.model.scale's choice)")
    args = parser.parse_args()
    configure_threads(args.threads)
    root = mura.resolve_root(args.mura_root)
    loaded = on_device(load_model(args.model), resolve_device(args.device))
    limit = args.limit or None
    engines = {
        "single process": Engine(device=args.device),
        f"DataLoader, {args.workers} workers": Engine(device=args.device, workers=args.workers),
        "local Ray": Engine(device=args.device, ray=True, actors=args.ray_actors),
    }
    ray = import_ray()
    started = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    predict_split(loaded, root, args.split, batch_size=args.batch_size, progress=False, limit=2)  # warm-up
    rates, results = {}, {}
    try:
        for name, engine in engines.items():
            started = time.perf_counter()
            results[name] = predict_split(
                loaded, root, args.split, batch_size=args.batch_size, progress=False, limit=limit, engine=engine
            )
            rates[name] = len(results[name]) / (time.perf_counter() - started)
        cpus = int(ray.cluster_resources().get("CPU", 0))
    finally:
        ray.shutdown()
    print(setup_line(loaded))
    print(
        f"{len(results['single process'])} images of {args.split}, batch {args.batch_size}, device {args.device}; "
        f"Ray: {cpus} CPUs, started in {ray_start:.1f} s (once per command, not counted below)"
    )
    reference = results["single process"]["probability"].to_numpy()
    for name, rate in rates.items():
        same = np.array_equal(results[name]["probability"].to_numpy(), reference)
        print(
            f"{name:24s} {rate:6.2f} img/s  x{rate / rates['single process']:4.2f}  "
            f"{'identical' if same else 'DIFFERENT'} probabilities"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
