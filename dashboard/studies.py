"""Studies the app opens without an upload: the project's synthetic samples and MURA studies.

A study is named by a reference string: an official MURA study path
(``MURA-v1.1/valid/XR_HUMERUS/patient11185/study1_positive/``), read from the MURA root the
user configured, or ``synthetic/<name>``, read from ``data_samples/synthetic``. References are
looked up, never joined onto a folder as given: MURA paths go through
:func:`core.mura.image_file` (which refuses anything outside the root, symlinks included) and
synthetic ones must be listed in the sample index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core import mura
from core.imaging import RadiographDecodeError, downsized, load_radiograph
from dashboard import state

__all__ = [
    "DATA_SAMPLES_DIR",
    "Study",
    "StudyLoadError",
    "is_mura_ref",
    "synthetic_studies",
    "curated_mura_studies",
    "study_title",
    "load_study",
    "mura_study_views",
]

DATA_SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data_samples"
_SYNTHETIC_INDEX = DATA_SAMPLES_DIR / "synthetic" / "index.csv"
_MURA_INDEX = DATA_SAMPLES_DIR / "mura_index.csv"
_NO_ROOT = ("MURA studies are read from your own copy of MURA v1.1: set the MURA folder in the sidebar "
            "(the app ships no MURA images).")


class StudyLoadError(ValueError):
    """A study cannot be opened; ``str(error)`` is one sentence for the user."""


@dataclass(frozen=True, eq=False)
class Study:
    """A study ready to predict and explain: its views as (name, uint8 greyscale pixels)."""

    ref: str
    title: str
    study_type: str | None
    label: int | None
    views: list[tuple[str, np.ndarray]]


def is_mura_ref(ref: str) -> bool:
    return ref.startswith("MURA-v1.1/")


@st.cache_data(show_spinner=False)
def synthetic_studies() -> pd.DataFrame:
    """The sample index written by data_samples/make_synthetic.py (ref, title, study_type, label, ...)."""
    return pd.read_csv(_SYNTHETIC_INDEX, dtype={"label": int})


@st.cache_data(show_spinner=False)
def curated_mura_studies() -> pd.DataFrame:
    """data_samples/mura_index.csv: interesting MURA studies by official path, with the reason."""
    if not _MURA_INDEX.is_file():
        return pd.DataFrame(columns=["study_path", "study_type", "label", "reason"])
    return pd.read_csv(_MURA_INDEX)


def study_title(ref: str) -> str:
    """A short human title: the sample's title, or "XR_HUMERUS patient11185 study1 (valid)"."""
    if is_mura_ref(ref):
        try:
            parts = mura.parse_official_path(ref)
        except mura.MuraRootError:
            return ref
        return f"{parts['study_type']} {parts['patient']} {parts['study']} ({parts['split']})"
    samples = synthetic_studies().set_index("ref")
    return str(samples.at[ref, "title"]) if ref in samples.index else ref


@st.cache_data(show_spinner=False, max_entries=256)
def _read_image(path: str, mtime: float) -> np.ndarray:
    return downsized(load_radiograph(Path(path))).pixels


def _pixels(path: Path) -> np.ndarray:
    return _read_image(str(path), path.stat().st_mtime)


def mura_study_views(root: Path, study_path: str) -> list[tuple[str, np.ndarray]]:
    """The present views of one official study under ``root``, in the official CSV's order."""
    try:
        split = mura.parse_official_path(study_path)["split"]
        paths = state.read_mura_images(root, split).query("study_path == @study_path")["path"].tolist()
        files = [mura.image_file(root, path) for path in paths]
    except mura.MuraRootError as exc:
        raise StudyLoadError(str(exc)) from exc
    if not files:
        raise StudyLoadError(f"No image of {study_path} is present in the MURA folder.")
    try:
        return [(file.name, _pixels(file)) for file in files]
    except (RadiographDecodeError, OSError) as exc:
        raise StudyLoadError(f"An image of {study_path} cannot be read: {exc}") from exc


def load_study(ref: str, mura_root: Path | None) -> Study:
    """Open a study by reference (official MURA study path, or ``synthetic/<name>``)."""
    if is_mura_ref(ref):
        if mura_root is None:
            raise StudyLoadError(_NO_ROOT)
        views = mura_study_views(mura_root, ref)
        parts = mura.parse_official_path(ref)
        labels = state.read_mura_images(mura_root, parts["split"]).query("study_path == @ref")["label"]
        return Study(ref, study_title(ref), parts["study_type"], int(labels.iloc[0]), views)
    samples = synthetic_studies().set_index("ref")
    if ref not in samples.index:
        raise StudyLoadError(f"{ref!r} is neither a MURA study path nor one of the app's samples.")
    row = samples.loc[ref]
    folder = DATA_SAMPLES_DIR / ref
    views = [(name, _pixels(folder / name)) for name in str(row["files"]).split(";")]
    return Study(ref, str(row["title"]), str(row["study_type"]), int(row["label"]), views)
