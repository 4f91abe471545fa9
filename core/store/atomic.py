"""Atomic file writes: a reader (the dashboard, a resumed run) sees the old file or the new one,
never a half-written one, even when the writer is killed mid-write or another process writes the
same file at the same time (each write goes through its own temporary file in the target folder).

A write that fails (disk full, no permission) removes its temporary file and raises
:class:`AtomicWriteError` naming the file it meant to write; the old file stays as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["AtomicWriteError", "write_text", "write_bytes", "save_torch", "save_npz"]

# mkstemp creates its file readable by the owner only; a written file gets the mode a plain open()
# would have given it. The umask is read once, at import, as os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


class AtomicWriteError(OSError):
    """A file could not be written; the message names it, and the previous file is untouched."""


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    tmp: Path | None = None
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        tmp = Path(name)
        write(tmp)
        tmp.chmod(_FILE_MODE)
        tmp.replace(path)
    # torch.save reports a failed write (disk full) as a RuntimeError from its C++ writer.
    except (OSError, RuntimeError) as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0] or type(exc).__name__
        raise AtomicWriteError(f"Cannot write {path}: {reason}.") from exc


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically; raises AtomicWriteError if it cannot."""
    _replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a report, a figure); raises AtomicWriteError if it cannot."""
    _replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def _savez(tmp: Path, arrays: dict[str, Any]) -> None:
    # Through an open file: given a name without ".npz", numpy would write to that name + ".npz".
    with tmp.open("wb") as handle:
        np.savez_compressed(handle, **arrays)


def save_npz(path: Path, **arrays: Any) -> None:
    """``np.savez_compressed`` ``arrays`` (plain arrays, no pickle) to ``path`` atomically."""
    _replace_atomically(path, lambda tmp: _savez(tmp, arrays))


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically, so a killed run never leaves a torn checkpoint."""
    _replace_atomically(path, lambda tmp: torch.save(obj, tmp))
