"""The first line every model benchmark prints: the machine and the model it measured."""

from __future__ import annotations

import os

import torch

from core.models import LoadedModel
from core.predict import uses_flip_tta


def setup_line(loaded: LoadedModel) -> str:
    """Cores, torch threads, and the model with its architecture, input size and TTA setting."""
    tta = "on" if uses_flip_tta(loaded) else "off"
    return (f"machine: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; model {loaded.name} "
            f"({loaded.config.name}, input {loaded.input_size} px, flip TTA {tta})")
