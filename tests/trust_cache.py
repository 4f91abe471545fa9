"""A weights folder whose scratch model has a finished trust cache over a tiny fake MURA (shared by the
Trust AppTests and the browser test, which must not each write the same CLI call)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from core import trust as trust_cli
from core.model.checkpoint import DEFAULT_MODEL
from tests.fake_mura import make_fake_mura

METHODS = ["GradCAM", "LayerCAM", "FEM"]


def trusted_weights(
    tmp_path_factory: pytest.TempPathFactory, scratch_weights: Path, name: str, layers: Sequence[str] = ()
) -> Path:
    """Copy the scratch model to a new weights folder and run ``python -m core.trust`` on it (2 studies per
    body part, :data:`METHODS`, ``layers`` or the default ones, 50 bootstraps); return the folder."""
    weights = tmp_path_factory.mktemp(f"{name}_weights")
    shutil.copytree(scratch_weights / DEFAULT_MODEL, weights / DEFAULT_MODEL)
    root = make_fake_mura(tmp_path_factory.mktemp(f"{name}_mura"), patients_per_type=2)
    arguments = ["--mura-root", str(root), "--per-part", "2", "--fracatlas-n", "0", "--methods", *METHODS]
    arguments += ["--layers", *layers] if layers else []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
        assert trust_cli.main([*arguments, "--bootstrap", "50"]) == 0
    return weights
