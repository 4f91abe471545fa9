"""Atomic file writes: a reader (the dashboard, a resumed run) sees the old file or the new one,
never a half-written one, even when the writer is killed mid-write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["write_text", "save_torch"]


def _temporary(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_text(path: Path, text: str) -> None:
    tmp = _temporary(path)
    tmp.write_text(text)
    tmp.replace(path)


def save_torch(obj: Any, path: Path) -> None:
    tmp = _temporary(path)
    torch.save(obj, tmp)
    tmp.replace(path)
