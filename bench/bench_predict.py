"""Latency of predict + GradCAM for one 320x320 input vs the bare forward+backward (target <= 1.5x).

    python bench/bench_predict.py [--model NAME] [--repeats 15] [--threads 2]

The floor is one forward and one backward pass of the same network with the input requiring a
gradient and the weights frozen (what any gradient CAM must at least do). The measured path is
what the Explain page runs for a new upload: core.model.prediction.predict_image_outputs (every output,
with the model card's flip TTA) then core.cam.explain.explain with GradCAM on the target and layer Explain
opens on (a fracture-aware model: P(fracture) at its fracture map), given the prediction's probability as
the app's cached prediction gives it, each including letterbox and normalisation. Runs alternate so both
see the same machine load; medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from core.cam.explain import explain, output_column
from core.eval.localization_sweep import default_target
from core.model.checkpoint import DEFAULT_MODEL, load_model
from core.model.prediction import DEFAULT_THREADS, configure_threads, model_inputs, predict_image_outputs

from setup_line import setup_line  # bench/ is on sys.path when a bench script runs


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--size", type=int, default=320, help="side of the square test image")
    args = parser.parse_args()
    configure_threads(args.threads)
    loaded = load_model(args.model)
    pixels = np.random.default_rng(0).integers(0, 256, size=(args.size, args.size), dtype=np.uint8)
    batch = model_inputs(loaded, [pixels])

    def floor() -> None:
        x = batch.clone().requires_grad_(True)
        loaded.model(x).sum().backward()

    def forward() -> None:
        with torch.inference_mode():
            loaded.model(batch)

    target = default_target(loaded.outputs)

    def predict_and_explain() -> None:
        outputs = predict_image_outputs(loaded, [pixels])[0]
        explain(loaded, pixels, method="GradCAM", target=target, probability=float(outputs[output_column(target)]))

    for function in (floor, forward, predict_and_explain):  # warm-up (and explain's model copy)
        function()
    timings: dict[str, list[float]] = {"floor": [], "forward": [], "predict+GradCAM": []}
    for _ in range(args.repeats):
        timings["floor"].append(_timed(floor))
        timings["forward"].append(_timed(forward))
        timings["predict+GradCAM"].append(_timed(predict_and_explain))
    medians = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    print(f"{setup_line(loaded)}; image {args.size}x{args.size}; GradCAM of P({target}); {args.repeats} repeats")
    print(f"forward only (inference)      : {medians['forward']:7.1f} ms")
    print(f"forward+backward (the floor)  : {medians['floor']:7.1f} ms")
    print(f"predict + GradCAM             : {medians['predict+GradCAM']:7.1f} ms")
    print(f"ratio to the floor            : {medians['predict+GradCAM'] / medians['floor']:7.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
