"""Cached resources shared by every page: the model, the cached evaluation, the MURA root.

Models load once per process (st.cache_resource) and tables once per file version
(st.cache_data). Sessions share one model object: core.explain runs CAMs on its own private
copies (one for the fast methods, one for the slow), each under its own lock, so pytorch_grad_cam's
hooks never touch the shared model and a slow CAM never holds up a fast one.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import pandas as pd
import streamlit as st

from core import mura
from core.models import (
    DEFAULT_MODEL,
    LoadedModel,
    ModelLoadError,
    list_shipped_models,
    load_model,
    weights_dir,
)

__all__ = [
    "MODEL_KEY",
    "MURA_ROOT_KEY",
    "EXPLAIN_STUDY_KEY",
    "current_model",
    "current_model_name",
    "current_mura_root",
    "get_model",
    "read_predictions",
    "read_metrics",
    "read_training_log",
    "read_card",
    "available_models",
    "resolve_mura_root",
    "locked_mura_root",
    "read_mura_images",
    "trained_study_types",
]

#: st.session_state keys written by the sidebar in dashboard/app.py and read by the pages.
MODEL_KEY = "model_name"
MURA_ROOT_KEY = "mura_root"
#: A study handed to the Explain page: an official MURA study path or a synthetic sample id.
EXPLAIN_STUDY_KEY = "explain_study"


@st.cache_resource(show_spinner="Loading the model…")
def _get_model(name: str, directory: str, checkpoint_mtime: float) -> LoadedModel:
    return load_model(name, directory=Path(directory))


def get_model(name: str) -> LoadedModel:
    """The shared, cached model, keyed by folder (tests point elsewhere) and checkpoint version
    (a retrained checkpoint is picked up without restarting the server)."""
    directory = weights_dir()
    return _get_model(name, str(directory), _mtime(directory / name / "checkpoint.pt"))


def available_models() -> list[str]:
    return list_shipped_models()


def current_model_name() -> str:
    return st.session_state.get(MODEL_KEY) or DEFAULT_MODEL


def current_model() -> LoadedModel:
    """The sidebar's model, or one st.error sentence and a stopped page when it cannot load."""
    name = current_model_name()
    try:
        return get_model(name)
    except ModelLoadError as exc:
        st.error(f"The model {name!r} cannot be loaded: {exc}")
        st.stop()


def current_mura_root() -> Path | None:
    """The validated MURA root chosen in the sidebar (or MURA_ROOT), else None."""
    value = st.session_state.get(MURA_ROOT_KEY)
    return Path(value) if value else None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_data(show_spinner=False)
def _read_predictions(path: str, mtime: float) -> pd.DataFrame | None:
    return pd.read_csv(path) if mtime else None


def read_predictions(model: str, split: str = "valid") -> pd.DataFrame | None:
    """The per-image predictions core.evaluate cached, or None if it has not been run."""
    path = weights_dir() / model / f"predictions_{split}.csv"
    return _read_predictions(str(path), _mtime(path))


@st.cache_data(show_spinner=False)
def _read_json(path: str, mtime: float) -> dict | None:
    return json.loads(Path(path).read_text()) if mtime else None


def read_metrics(model: str, split: str = "valid") -> dict | None:
    path = weights_dir() / model / f"metrics_{split}.json"
    return _read_json(str(path), _mtime(path))


def read_card(model: str) -> dict | None:
    path = weights_dir() / model / "model_card.json"
    return _read_json(str(path), _mtime(path))


def read_training_log(model: str) -> pd.DataFrame | None:
    path = weights_dir() / model / "training_log.csv"
    return _read_predictions(str(path), _mtime(path))


def resolve_mura_root(text: str) -> tuple[Path | None, str | None]:
    """Validate a MURA root for the app: (path, None) or (None, one-sentence reason).

    The pages show the valid/ split, so its CSVs are read here (cached) and a root whose
    valid/ CSVs are missing or malformed is refused once, in the sidebar, instead of failing
    on every page that reads it.
    """
    try:
        root = mura.resolve_root(text)
        read_mura_images(root, "valid")
    except mura.MuraRootError as exc:
        return None, str(exc)
    return root, None


def locked_mura_root() -> tuple[Path | None, str | None]:
    """The deployer's MURA_ROOT for a locked data folder: like resolve_mura_root, (None, None) when unset.

    A reason is also written to the server log (once): visitors are not shown the server's path.
    """
    value = os.environ.get("MURA_ROOT", "").strip()
    if not value:
        return None, None
    root, reason = resolve_mura_root(value)
    if reason:
        _log_once(f"MURA_ROOT cannot be used: {reason}")
    return root, reason


@functools.cache
def _log_once(message: str) -> None:
    logging.getLogger(__name__).warning(message)


@st.cache_data(show_spinner="Reading the MURA folder…")
def _read_mura_images(root: str, split: str, csv_mtime: float) -> pd.DataFrame:
    return mura.read_images(Path(root), split)


def read_mura_images(root: Path, split: str = "valid") -> pd.DataFrame:
    """Present images of a split (core.mura.read_images), cached per root and CSV version."""
    return _read_mura_images(str(root), split, _mtime(root / f"{split}_image_paths.csv"))


def trained_study_types(card: dict) -> list[str]:
    """Body parts the model was trained on, from its card (training data, else its thresholds)."""
    trained = card.get("training_data", {}).get("all")
    if isinstance(trained, dict) and trained:
        return sorted(trained)
    return sorted(key for key in card.get("thresholds", {}) if key != "default")
