"""Cached resources shared by every page: the model, the cached evaluation, the MURA root.

Models load once per process (st.cache_resource) and tables once per file version
(st.cache_data), keyed by core.store.artifacts.file_version of the files they come from. Sessions
share one model object: core.cam.explain runs CAMs on its own private copies (one for the fast
methods, one for the slow), each under its own lock, so pytorch_grad_cam's hooks never touch the
shared model and a slow CAM never holds up a fast one.

Broken files are one st.error sentence naming the file, never a traceback: a damaged card or
checkpoint stops every page (:func:`checked_model_name`, :func:`current_model`), and cached
predictions and metrics from different runs stop the pages that would show their numbers.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import pandas as pd
import streamlit as st

from core.data import fracture_split, mura
from core.model import card
from core.model.checkpoint import DEFAULT_MODEL, LoadedModel, check_model, list_shipped_models, load_model
from core.model.registry import ModelLoadError
from core.store.artifacts import (
    Evaluation,
    EvaluationMismatchError,
    ModelArtifacts,
    file_version,
    read_evaluation,
    read_json_object,
)

__all__ = [
    "MODEL_KEY",
    "MURA_ROOT_KEY",
    "EXPLAIN_STUDY_KEY",
    "current_model",
    "current_model_name",
    "checked_model_name",
    "current_mura_root",
    "get_model",
    "cached_evaluation",
    "evaluation_or_stop",
    "read_predictions",
    "read_metrics",
    "read_training_log",
    "read_scope_metrics",
    "read_card",
    "read_fracture_split",
    "available_models",
    "resolve_mura_root",
    "locked_mura_root",
    "read_mura_images",
]

#: st.session_state keys written by the sidebar in dashboard/app.py and read by the pages.
MODEL_KEY = "model_name"
MURA_ROOT_KEY = "mura_root"
#: A study handed to the Explain page: an official MURA study path or a synthetic sample id.
EXPLAIN_STUDY_KEY = "explain_study"
#: Models held in memory at once: the shipped ones side by side on the comparison pages, plus one
#: retrained; the oldest goes when a rewritten checkpoint (a new file version) is loaded beyond that.
MODEL_CACHE_ENTRIES = 4


def _files(model: str) -> ModelArtifacts:
    return ModelArtifacts.of(model)


def _model_version(files: ModelArtifacts) -> tuple[int, int, int]:
    # A model stored as a delta on a base model is rebuilt when the base's checkpoint changes too.
    base = files.base
    return file_version(files.checkpoint), file_version(files.card), file_version(base.checkpoint) if base else 0


@st.cache_resource(show_spinner="Loading the model…", max_entries=MODEL_CACHE_ENTRIES)
def _get_model(name: str, directory: str, version: tuple[int, int, int]) -> LoadedModel:
    return load_model(name, directory=Path(directory))


def get_model(name: str) -> LoadedModel:
    """The shared, cached model, keyed by folder (tests point elsewhere) and the versions of its
    checkpoint and card (a retrained model is picked up without restarting the server)."""
    files = _files(name)
    return _get_model(name, str(files.directory.parent), _model_version(files))


def available_models() -> list[str]:
    """Models the sidebar offers: folders under the weights directory with a checkpoint and a card."""
    return list_shipped_models()


def current_model_name() -> str:
    """The sidebar's model choice, or the default model before the sidebar has run."""
    return st.session_state.get(MODEL_KEY) or DEFAULT_MODEL


def current_model() -> LoadedModel:
    """The sidebar's model, or one st.error sentence naming the bad file and a stopped page."""
    try:
        return get_model(current_model_name())
    except ModelLoadError as exc:
        st.error(str(exc))
        st.stop()


@st.cache_data(show_spinner=False, max_entries=16)
def _model_problem(name: str, directory: str, version: tuple[int, int, int]) -> str | None:
    try:
        check_model(name, directory=Path(directory))
    except ModelLoadError as exc:
        return str(exc)
    return None


def checked_model_name() -> str:
    """The sidebar's model after a cheap check of its card and checkpoint (no network is built;
    cached per file version), for pages that read only caches; a broken file gives one st.error
    sentence naming it and a stopped page, as on the pages that run the model."""
    name = current_model_name()
    files = _files(name)
    try:
        if files.checkpoint.is_file():
            problem = _model_problem(name, str(files.directory.parent), _model_version(files))
        else:  # a missing model is each page's own message, but a card beside it can still be damaged
            read_card(name)
            problem = None
    except card.ModelCardError as exc:
        problem = str(exc)
    if problem:
        st.error(problem)
        st.stop()
    return name


def current_mura_root() -> Path | None:
    """The validated MURA root chosen in the sidebar (or MURA_ROOT), else None."""
    value = st.session_state.get(MURA_ROOT_KEY)
    return Path(value) if value else None


@st.cache_data(show_spinner=False, max_entries=16)
def _read_evaluation(dataset: str, version: tuple[str, int, int]) -> Evaluation | None:
    directory, _predictions_version, _metrics_version = version
    return read_evaluation(ModelArtifacts(Path(directory)), dataset)


def cached_evaluation(model: str, dataset: str = "valid") -> Evaluation | None:
    """The predictions and metrics an evaluation CLI cached, or None if it has not been run.

    Raises:
        EvaluationMismatchError: the two files come from different runs (or cannot be read).
    """
    return _read_evaluation(dataset, _files(model).evaluation_version(dataset))


def evaluation_or_stop(model: str, dataset: str = "valid") -> Evaluation | None:
    """:func:`cached_evaluation`, or one st.error sentence and a stopped page for a mismatched pair
    (numbers from two different runs are never shown)."""
    try:
        return cached_evaluation(model, dataset)
    except EvaluationMismatchError as exc:
        st.error(str(exc))
        st.stop()


def read_predictions(model: str, dataset: str = "valid") -> pd.DataFrame | None:
    """The per-image predictions of the cached evaluation (see :func:`cached_evaluation`)."""
    evaluation = cached_evaluation(model, dataset)
    return None if evaluation is None else evaluation.predictions


def read_metrics(model: str, dataset: str = "valid") -> dict | None:
    """The metrics of the cached evaluation (see :func:`cached_evaluation`)."""
    evaluation = cached_evaluation(model, dataset)
    return None if evaluation is None else evaluation.metrics


@st.cache_data(show_spinner=False, max_entries=32)
def _read_card(path: str, version: int) -> dict | None:
    return card.read_card(Path(path)) if version else None


def read_card(model: str) -> dict | None:
    """The model's card, or None without one.

    Raises:
        core.model.card.ModelCardError: the card is damaged (pages call :func:`checked_model_name` first).
    """
    path = _files(model).card
    return _read_card(str(path), file_version(path))


@st.cache_data(show_spinner=False, max_entries=8)
def _read_fracture_split(path: str, version: int) -> pd.DataFrame | None:
    return fracture_split.read_split(Path(path)) if version else None


def read_fracture_split(model: str) -> pd.DataFrame | None:
    """The model's FracAtlas split (test part and training folds of its fracture output), or None without one;
    re-read when the file changes.

    Raises:
        core.data.fracture_split.SplitError: the split file is damaged (one sentence).
    """
    path = _files(model).directory / fracture_split.SPLIT_FILE
    return _read_fracture_split(str(path), file_version(path))


@st.cache_data(show_spinner=False, max_entries=16)
def _read_json(path: str, version: int) -> dict | None:
    return read_json_object(Path(path)) if version else None


def read_scope_metrics(model: str) -> dict | None:
    """core.scope's measurement of the model's scope head, or None without a readable one."""
    files = _files(model)
    path = files.resolve(files.scope_metrics)
    return _read_json(str(path), file_version(path))


@st.cache_data(show_spinner=False, max_entries=16)
def _read_training_log(path: str, version: int) -> pd.DataFrame | None:
    return pd.read_csv(path) if version else None


def read_training_log(model: str) -> pd.DataFrame | None:
    """The model's per-epoch training log, or None if it has none; re-read when the file changes."""
    files = _files(model)
    path = files.resolve(files.training_log)
    return _read_training_log(str(path), file_version(path))


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
def _read_mura_images(root: str, split: str, csv_version: int) -> pd.DataFrame:
    return mura.read_images(Path(root), split)


def read_mura_images(root: Path, split: str = "valid") -> pd.DataFrame:
    """Present images of a split (core.data.mura.read_images), cached per root and CSV version."""
    return _read_mura_images(str(root), split, file_version(root / f"{split}_image_paths.csv"))
