"""Studies the app opens without an upload: real FracAtlas radiographs, the project's synthetic
samples and MURA studies.

A study is named by a reference string: an official MURA study path
(``MURA-v1.1/valid/XR_HUMERUS/patient11185/study1_positive/``), read from the MURA root the
user configured; ``fracatlas/<file>`` (``fracatlas/images/IMG0002313.jpg``), one real radiograph
of the FracAtlas root shipped in ``data_samples/fracatlas`` (CC BY 4.0, credited wherever shown);
or ``synthetic/<name>``, read from ``data_samples/synthetic``. References are looked up, never
joined onto a folder as given: MURA paths go through :func:`core.data.mura.image_file` and FracAtlas
files through :func:`core.data.fracatlas.image_file` (both refuse anything outside their root, symlinks
included), and FracAtlas and synthetic ones must be listed in their sample index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import streamlit as st

from core.data import fracatlas, mura
from core.data.imaging import RadiographDecodeError, downsized, load_radiograph
from core.eval.evaluation import REGION_LABELS, REGION_THRESHOLDS
from dashboard import state

__all__ = [
    "DATA_SAMPLES_DIR",
    "FRACATLAS_PREFIX",
    "FRACATLAS_SAMPLES_DIR",
    "Study",
    "StudyLoadError",
    "is_mura_ref",
    "is_fracatlas_ref",
    "synthetic_studies",
    "fracatlas_samples",
    "region_study_type",
    "label_caption",
    "curated_mura_studies",
    "mura_study_paths",
    "study_title",
    "load_study",
    "mura_study_views",
]

DATA_SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data_samples"
FRACATLAS_PREFIX = "fracatlas/"
FRACATLAS_SAMPLES_DIR = DATA_SAMPLES_DIR / "fracatlas"
_SYNTHETIC_INDEX = DATA_SAMPLES_DIR / "synthetic" / "index.csv"
_MURA_INDEX = DATA_SAMPLES_DIR / "mura_index.csv"
_NO_ROOT = (
    "MURA studies are read from your own copy of MURA v1.1: set the MURA folder in the sidebar "
    "(the app ships no MURA images)."
)


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
    """Whether a study reference is a path in the MURA copy rather than a shipped sample."""
    return ref.startswith("MURA-v1.1/")


def is_fracatlas_ref(ref: str) -> bool:
    """Whether a study reference names one of the FracAtlas sample radiographs."""
    return ref.startswith(FRACATLAS_PREFIX)


@st.cache_data(show_spinner=False)
def fracatlas_samples() -> pd.DataFrame:
    """The real radiographs of data_samples/fracatlas (core.data.fracatlas.read_images) with their ``ref``
    and ``title``, in the order of its labels.csv (fractures first); empty if the folder is absent."""
    try:
        images = fracatlas.read_images(fracatlas.resolve_root(FRACATLAS_SAMPLES_DIR))
    except fracatlas.FracAtlasError:
        return pd.DataFrame(columns=["ref", "title", "file", "region", "fractured", "hardware", "upper_limb"])
    return images.assign(
        ref=FRACATLAS_PREFIX + images["file"].astype(str), title=[_fracatlas_title(row) for row in images.itertuples()]
    )


def _fracatlas_title(row: object) -> str:
    """ "FracAtlas IMG0002313, hand/wrist/forearm: fracture" (and hardware when present)."""
    finding = "fracture" if row.fractured else "no fracture"
    if row.hardware:
        finding += ", metal hardware"
    return f"FracAtlas {PurePosixPath(str(row.file)).stem}, {REGION_LABELS.get(row.region, row.region)}: {finding}"


def region_study_type(region: str) -> str | None:
    """The MURA body part whose threshold judges a FracAtlas region (core.eval.evaluation.REGION_THRESHOLDS);
    None for the card's default threshold (whole arm) or no trained part at all (leg/hip)."""
    key = REGION_THRESHOLDS.get(region)
    return key if key and key.startswith("XR_") else None


def label_caption(study: Study) -> str:
    """What the reference label is and where it comes from, in one line for the Explain page."""
    if study.label is None:
        return ""
    if is_fracatlas_ref(study.ref):
        word = "fracture" if study.label else "no fracture"
        return (
            f"Reference label: **{word}** (FracAtlas, drawn by radiologists). It is a *fracture* label, not "
            "MURA's broader *abnormal*: metal hardware or arthritis without a fracture counts as no fracture here."
        )
    source = " (MURA)" if is_mura_ref(study.ref) else " (drawn by the sample generator)"
    return f"Reference label: **{'abnormal' if study.label else 'normal'}**{source}"


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


def mura_study_paths(root: Path) -> list[str]:
    """Every study of the MURA folder with an image present, valid/ then train/, in path order; a
    split whose CSVs are missing or broken is left out (the sidebar already says what is wrong)."""
    paths: list[str] = []
    for split in ("valid", "train"):
        try:
            paths += sorted(state.read_mura_images(root, split)["study_path"].unique())
        except mura.MuraRootError:
            continue
    return paths


def study_title(ref: str) -> str:
    """A short human title: the sample's title, or "XR_HUMERUS patient11185 study1 (valid)"."""
    if is_mura_ref(ref):
        try:
            parts = mura.parse_official_path(ref)
        except mura.MuraRootError:
            return ref
        return f"{parts['study_type']} {parts['patient']} {parts['study']} ({parts['split']})"
    if is_fracatlas_ref(ref):
        real = fracatlas_samples().set_index("ref")
        return str(real.at[ref, "title"]) if ref in real.index else ref
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
    """Open a study by reference (official MURA study path, ``fracatlas/<file>`` or ``synthetic/<name>``).

    A FracAtlas radiograph is one view; its ``study_type`` is the MURA body part whose threshold
    judges its region (None: the default threshold), and its label is *fracture*.
    """
    if is_mura_ref(ref):
        if mura_root is None:
            raise StudyLoadError(_NO_ROOT)
        views = mura_study_views(mura_root, ref)
        parts = mura.parse_official_path(ref)
        labels = state.read_mura_images(mura_root, parts["split"]).query("study_path == @ref")["label"]
        return Study(ref, study_title(ref), parts["study_type"], int(labels.iloc[0]), views)
    if is_fracatlas_ref(ref):
        return _fracatlas_study(ref)
    samples = synthetic_studies().set_index("ref")
    if ref not in samples.index:
        raise StudyLoadError(f"{ref!r} is neither a MURA study path nor one of the app's samples.")
    row = samples.loc[ref]
    folder = DATA_SAMPLES_DIR / ref
    views = [(name, _pixels(folder / name)) for name in str(row["files"]).split(";")]
    return Study(ref, str(row["title"]), str(row["study_type"]), int(row["label"]), views)


def _fracatlas_study(ref: str) -> Study:
    """One shipped FracAtlas radiograph, looked up in the sample index and resolved inside its root."""
    real = fracatlas_samples().set_index("ref")
    if ref not in real.index:
        raise StudyLoadError(f"{ref!r} is not one of the FracAtlas radiographs shipped with the app.")
    row = real.loc[ref]
    try:
        path = fracatlas.image_file(FRACATLAS_SAMPLES_DIR.resolve(), str(row["file"]))
        pixels = _pixels(path)
    except (fracatlas.FracAtlasError, RadiographDecodeError, OSError) as exc:
        raise StudyLoadError(f"The FracAtlas radiograph {row['file']} cannot be read: {exc}") from exc
    return Study(
        ref,
        str(row["title"]),
        region_study_type(str(row["region"])),
        int(row["fractured"]),
        [(PurePosixPath(str(row["file"])).name, pixels)],
    )
