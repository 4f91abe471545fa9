"""Faster CPU inference for core.evaluate? Eager torch against channels_last, fused ensemble
batching, torch.compile and ONNX Runtime, on the same decoded images in one run.

    python bench/bench_backends.py --mura-root PATH [--model NAME] [--limit 48] [--rounds 3]

Every variant computes what core.model.prediction.predict_batch computes (flip TTA, mean of the members'
probabilities) on the same batches of pre-decoded images at the same batch size and thread count.
The variants run in interleaved rounds (A B C ... A B C ...) so that load from other work on the
machine falls on all of them alike; each variant's figure is its median round. Prints images/s,
the speed-up over eager and the largest probability difference from eager (adoption needs
>= 1.5x and <= 1e-4; bf16 autocast is shown for its gap, where GPUs' rule is 1e-3). Compilation
and export times are printed apart: they are paid once per run.
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.data import mura
from core.data.imaging import load_radiograph
from core.model.backends import FusedProbability, OnnxPredictor, onnx_model_path
from core.model.checkpoint import LoadedModel, load_model
from core.model.prediction import configure_threads, model_inputs, predict_batch

from setup_line import model_bench_parser, setup_line  # bench/ is on sys.path when a bench script runs

Runner = Callable[[torch.Tensor], np.ndarray]


def _vmapped(members: list[nn.Module]) -> Runner:
    """All members in one vmapped call over stacked weights (torch.func), flip stacked into the batch."""
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")

    def one(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    @torch.inference_mode()
    def run(x: torch.Tensor) -> np.ndarray:
        both = torch.cat([x, torch.flip(x, dims=[-1])])
        logits = vmap(one, in_dims=(0, 0, None))(params, buffers, both)  # (members, 2N, 1)
        mean = torch.sigmoid(logits.squeeze(-1).float()).mean(0)
        n = x.shape[0]
        return ((mean[:n] + mean[n:]) / 2).double().numpy()

    return run


def _onnx(loaded: LoadedModel, threads: int) -> tuple[Runner, float]:
    """core.model.backends' own path: the fused graph exported (into a fresh folder, so the export is timed) and
    an ONNX Runtime session on it."""
    started = time.perf_counter()
    predictor = OnnxPredictor(onnx_model_path(loaded, Path(tempfile.mkdtemp())), threads)
    return predictor, time.perf_counter() - started


def main() -> int:
    parser = model_bench_parser(__doc__, limit=48, limit_help="images per round")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes to compile)")
    args = parser.parse_args()
    configure_threads(args.threads)
    root = mura.resolve_root(args.mura_root)
    loaded = load_model(args.model)
    paths = mura.read_images(root, args.split)["path"].iloc[: args.limit]
    decoded = [load_radiograph(mura.image_file(root, p)).pixels for p in paths]
    batches = [model_inputs(loaded, decoded[i : i + args.batch_size]) for i in range(0, len(decoded), args.batch_size)]
    fused = FusedProbability.of(loaded)
    members = list(fused.members)

    runners: dict[str, Runner] = {"eager (today)": lambda x: predict_batch(loaded, x)}
    cl_model = copy.deepcopy(loaded.model).to(memory_format=torch.channels_last)
    cl_loaded = copy.copy(loaded)
    cl_loaded.model = cl_model
    runners["channels_last"] = lambda x: predict_batch(cl_loaded, x.contiguous(memory_format=torch.channels_last))
    runners["fused flip (4 fwd of 2N)"] = torch.inference_mode()(lambda x: fused(x).double().numpy())
    fused_cl = FusedProbability(
        [copy.deepcopy(m).to(memory_format=torch.channels_last) for m in members], flip_tta=fused.flip_tta
    ).eval()
    runners["fused flip + channels_last"] = torch.inference_mode()(
        lambda x: fused_cl(x.contiguous(memory_format=torch.channels_last)).double().numpy()
    )
    runners["vmap members (torch.func)"] = _vmapped(members)

    def bf16(x: torch.Tensor) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return predict_batch(loaded, x)

    runners["bf16 autocast (CPU)"] = bf16
    onnx_run, onnx_seconds = _onnx(loaded, args.threads)
    runners["ONNX Runtime CPU (fused)"] = onnx_run
    print(f"ONNX export + session: {onnx_seconds:.1f} s (once)")
    if not args.no_compile:
        compiled = torch.compile(fused)
        started = time.perf_counter()
        with torch.inference_mode():
            for size in sorted({len(b) for b in batches}):
                compiled(batches[0][:size])
        print(f"torch.compile (inductor) warm-up: {time.perf_counter() - started:.1f} s (once)")
        runners["torch.compile (fused)"] = torch.inference_mode()(lambda x: compiled(x).double().numpy())

    reference = np.concatenate([runners["eager (today)"](b) for b in batches])
    differences, times = {}, {name: [] for name in runners}
    for name, run in runners.items():
        differences[name] = float(np.abs(np.concatenate([run(b) for b in batches]) - reference).max())  # warm-up
    for _ in range(args.rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            for batch in batches:
                run(batch)
            times[name].append(time.perf_counter() - started)

    print(setup_line(loaded))
    print(
        f"load average before/after: see `uptime`; {len(decoded)} images, batch {args.batch_size}, "
        f"{args.rounds} interleaved rounds, median"
    )
    eager = len(decoded) / statistics.median(times["eager (today)"])
    for name in runners:
        rate = len(decoded) / statistics.median(times[name])
        print(f"{name:30s} {rate:6.2f} img/s  x{rate / eager:4.2f}  max |dp| {differences[name]:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
