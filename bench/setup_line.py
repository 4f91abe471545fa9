"""What every model benchmark shares: its common flags, and the first line it prints (the machine and
the model it measured)."""

from __future__ import annotations

import argparse
import os

import torch

from core.model.checkpoint import DEFAULT_MODEL, LoadedModel
from core.model.prediction import DEFAULT_BATCH_SIZE, DEFAULT_THREADS, uses_flip_tta


def setup_line(loaded: LoadedModel) -> str:
    """Cores, torch threads, and the model with its architecture, input size and TTA setting."""
    tta = "on" if uses_flip_tta(loaded) else "off"
    return (
        f"machine: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; model {loaded.name} "
        f"({loaded.config.name}, input {loaded.input_size} px, flip TTA {tta})"
    )


def model_bench_parser(doc: str | None, *, limit: int, limit_help: str, rounds: bool = True) -> argparse.ArgumentParser:
    """A parser with the flags every model benchmark takes: the MURA copy (MURA_ROOT by default), model,
    split, images, interleaved rounds, batch size and torch threads."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--mura-root", default=os.environ.get("MURA_ROOT"), required=not os.environ.get("MURA_ROOT"))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--limit", type=int, default=limit, help=limit_help)
    if rounds:
        parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    return parser
