"""Reader for a MURA v1.1 root in the official layout, into pandas tables.

Works on a partial copy: the official CSVs list the whole release, and the tables say which
images are present. Every path is the official relative path (``MURA-v1.1/valid/XR_...png``);
:func:`image_file` turns one into a file path and refuses anything that escapes the root, and
the CSVs are found the same way (a CSV that is a symlink out of the root is refused).

The root may be typed by a stranger on a public server, so every failure is a
:class:`MuraRootError` of one sentence that names the folder only as it was given (never its
expansion or resolution) and never repeats a file's content. ``MURA_LENS_LOCK_DATA=1`` tells
the dashboard that the deployer has fixed the root to ``MURA_ROOT`` (:func:`data_folder_locked`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

__all__ = [
    "SPLITS",
    "STUDY_TYPES",
    "LOCK_ENV",
    "MAX_CSV_BYTES",
    "MAX_CSV_ROWS",
    "MuraRootError",
    "data_folder_locked",
    "resolve_root",
    "image_file",
    "read_images",
    "read_studies",
    "coverage",
    "parse_official_path",
]

SPLITS = ("train", "valid")
#: MURA's seven body parts, as its folders name them.
STUDY_TYPES = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
#: Environment variable a deployer sets to 1 to lock the dashboard's data folder to MURA_ROOT.
LOCK_ENV = "MURA_LENS_LOCK_DATA"
#: Largest CSV read, in bytes and rows: the official train_image_paths.csv is 2.4 MB of 36,808 rows. A
#: folder box that took any CSV was made to hold 911,806 rows (+704 MiB, 126 s of checks).
MAX_CSV_BYTES = 8 * 2**20
MAX_CSV_ROWS = 50_000
_SHOWN_PATH_LIMIT = 80
_PATH_PATTERN = re.compile(
    r"^MURA-v1\.1/(?P<split>train|valid)/(?P<study_type>XR_[A-Z]+)/(?P<patient>patient\d+)/"
    r"(?P<study>study\d+)_(?P<polarity>positive|negative)/(?:(?P<image>image\d+\.png))?$"
)


class MuraRootError(ValueError):
    """The MURA root is missing, incomplete or unsafe; the message says what to fix."""


def data_folder_locked() -> bool:
    """Whether the deployer locked the data folder to ``MURA_ROOT`` (``MURA_LENS_LOCK_DATA=1``)."""
    return os.environ.get(LOCK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _shown(path: str | os.PathLike[str]) -> str:
    """The folder as the user gave it, shortened in the middle when long."""
    text = "".join(c if c.isprintable() else "?" for c in str(path))
    if len(text) <= _SHOWN_PATH_LIMIT:
        return text
    keep = (_SHOWN_PATH_LIMIT - 1) // 2
    return text[:keep] + "…" + text[-keep:]


def resolve_root(path: str | os.PathLike[str]) -> Path:
    """Validate a MURA root (the folder holding ``train_image_paths.csv`` etc.)."""
    shown = _shown(path)
    try:
        root = Path(path).expanduser()
        if not root.exists():
            raise MuraRootError(f"The MURA folder {shown} does not exist.")
        if not root.is_dir():
            raise MuraRootError(f"{shown} is a file, not a MURA folder.")
        csvs = [f"{s}_{kind}.csv" for s in SPLITS for kind in ("image_paths", "labeled_studies")]
        if not any((root / name).is_file() for name in csvs):
            raise MuraRootError(
                f"{shown} has none of the official MURA CSVs ({', '.join(csvs)}); "
                "point it at the MURA-v1.1 folder itself."
            )
        return root.resolve()
    except MuraRootError:
        raise
    except RuntimeError as exc:  # Path.expanduser: "~nosuchuser"
        raise MuraRootError(f"The MURA folder {shown} names a home folder that does not exist.") from exc
    except (OSError, ValueError) as exc:  # too long a name, no permission, a NUL byte
        raise MuraRootError(f"The MURA folder {shown} cannot be opened.") from exc


def parse_official_path(official_path: str) -> dict[str, str]:
    """Split an official path into split, study_type, patient, study and polarity."""
    match = _PATH_PATTERN.match(official_path)
    if not match:
        raise MuraRootError(f"{official_path!r} is not an official MURA v1.1 path.")
    return match.groupdict()


def image_file(root: Path, official_path: str) -> Path:
    """File path of an official image path under ``root``; never outside it (symlinks included)."""
    parse_official_path(official_path)
    relative = official_path.split("/", 1)[1]
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise MuraRootError(f"{official_path!r} leads outside the MURA folder; refused.")
    return candidate


def _read_csv(root: Path, name: str, columns: list[str]) -> pd.DataFrame:
    """One official CSV as strings; absent gives an empty table, anything unsafe or unreadable a refusal."""
    path = root / name
    try:
        if not path.is_file():
            return pd.DataFrame(columns=columns)
        if not path.resolve().is_relative_to(root.resolve()):
            raise MuraRootError(f"{name} leads outside the MURA folder; refused.")
        if path.stat().st_size > MAX_CSV_BYTES:
            raise MuraRootError(f"{name} is larger than {MAX_CSV_BYTES // 2**20} MB, too large to be a MURA CSV.")
        table = pd.read_csv(path, header=None, names=columns, dtype=str, encoding="utf-8", nrows=MAX_CSV_ROWS + 1)
        if len(table) > MAX_CSV_ROWS:
            raise MuraRootError(f"{name} has more than {MAX_CSV_ROWS:,} rows, more than a MURA CSV holds.")
        return table
    except MuraRootError:
        raise
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not CSV (pandas' ParserError is a ValueError)
        raise MuraRootError(f"{name} in the MURA folder cannot be read as a MURA CSV.") from exc


def read_studies(root: Path, split: str) -> pd.DataFrame:
    """One row per official study of ``split``, with how many of its images are present."""
    images = read_images(root, split, present_only=False)
    grouped = images.groupby("study_path", sort=True)
    studies = grouped.agg(
        split=("split", "first"),
        study_type=("study_type", "first"),
        patient=("patient", "first"),
        study=("study", "first"),
        label=("label", "first"),
        n_images=("path", "size"),
        n_present=("present", "sum"),
    ).reset_index()
    return studies


def read_images(root: Path, split: str, *, present_only: bool = True) -> pd.DataFrame:
    """One row per official image of ``split``: path, split, study_type, patient, study,
    study_path, label (1 = abnormal, from the labelled-studies CSV) and present."""
    if split not in SPLITS:
        raise MuraRootError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    paths = _read_csv(root, f"{split}_image_paths.csv", ["path"])
    labels = _read_csv(root, f"{split}_labeled_studies.csv", ["study_path", "label"])
    if paths.empty:
        raise MuraRootError(f"The MURA folder has no {split}_image_paths.csv (or it lists no image).")
    parts = paths["path"].str.extract(_PATH_PATTERN)
    bad = parts["split"].ne(split)  # NaN (not an official path) is unequal too
    if bad.any():
        # The row number, not its text: the file's content is never shown.
        raise MuraRootError(
            f"{split}_image_paths.csv has {int(bad.sum())} rows that are not official MURA paths "
            f"of {split}/ (first: row {int(bad.to_numpy().argmax()) + 1})."
        )
    label_values = pd.to_numeric(labels["label"], errors="coerce")
    if not label_values.isin([0, 1]).all():
        raise MuraRootError(f"{split}_labeled_studies.csv has labels other than 0 and 1.")
    table = pd.concat([paths, parts[["split", "study_type", "patient", "study"]]], axis=1)
    table["study_path"] = table["path"].str.rsplit("/", n=1).str[0] + "/"
    label_map = dict(zip(labels["study_path"], label_values.astype(int), strict=True))
    polarity = parts["polarity"].map({"positive": 1, "negative": 0})
    table["label"] = table["study_path"].map(label_map).fillna(polarity).astype(int)
    table["present"] = [_is_present(root, p) for p in table["path"]]
    if present_only:
        table = table[table["present"]].reset_index(drop=True)
    return table


def _is_present(root: Path, official_path: str) -> bool:
    try:
        return image_file(root, official_path).is_file()
    except MuraRootError:
        return False


def coverage(root: Path) -> pd.DataFrame:
    """Per split and study type: images listed by the CSVs, present, and whether complete."""
    rows = []
    for split in SPLITS:
        try:
            images = read_images(root, split, present_only=False)
        except MuraRootError:
            continue
        for study_type, group in images.groupby("study_type"):
            present = group[group["present"]]
            rows.append(
                {
                    "split": split,
                    "study_type": study_type,
                    "images_listed": len(group),
                    "images_present": len(present),
                    "studies_present": present["study_path"].nunique(),
                    "complete": len(present) == len(group),
                }
            )
    return pd.DataFrame(rows)
