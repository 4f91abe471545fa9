"""FracAtlas's fixed test part and training folds for the fracture output, by copy group.

About a fifth of FracAtlas (by copy group, stratified by region and fracture, and always including
the images shipped in data_samples/fracatlas) is the **test part**: never trained or tuned on, the
source of every FracAtlas figure shown for a fracture-aware model. The rest of the upper-limb
images are split into K folds, copy groups kept whole, so each fold's member is scored out of fold.
Leg/hip images outside the test part are never trained on (they are the out-of-scope examples).

The split is written once to ``fracatlas_split.csv`` in the model's folder and read from there:
withheld images, absent here, belong to no fold and so were never trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from core.data import fracatlas

__all__ = [
    "SPLIT_FILE",
    "TEST",
    "OUT_OF_SCOPE",
    "SplitError",
    "fold_name",
    "make_split",
    "read_split",
    "trained_files",
    "trained_on",
    "training_rows",
]

SPLIT_FILE = "fracatlas_split.csv"
TEST = "test"
OUT_OF_SCOPE = "leg/hip (never trained)"
TEST_FRACTION = 0.2
SEED = 0
_COLUMNS = ("file", "region", "fractured", "hardware", "copy_group", "part")


class SplitError(ValueError):
    """A split file that is missing, malformed or breaks the rules (one sentence)."""


def fold_name(fold: int) -> str:
    """The ``part`` value of training fold ``fold``."""
    return f"fold{fold}"


def make_split(root: Path, shipped: list[str], *, folds: int = 4, seed: int = SEED) -> pd.DataFrame:
    """Assign every image of the FracAtlas ``root`` to the test part, a fold, or leg/hip.

    ``shipped`` names files (as in labels.csv) that must be in the test part: the app shows them
    as examples, so no member may have trained on them (nor on their copies).
    """
    images = fracatlas.read_images(root)
    files = images["file"].astype(str).tolist()
    groups = pd.Series(fracatlas.duplicate_groups(root, files), index=images.index)
    strata = images["region"].astype(str) + "/" + images["fractured"].astype(str)
    # One fold of five (about 20%) by copy group, stratified by region and fracture.
    test_splitter = StratifiedGroupKFold(n_splits=round(1 / TEST_FRACTION), shuffle=True, random_state=seed)
    _, test_idx = next(test_splitter.split(images, strata, groups=groups))
    test_groups = set(groups.iloc[test_idx]) | set(groups[images["file"].isin(shipped)])
    part = pd.Series(np.where(groups.isin(test_groups), TEST, ""), index=images.index, dtype=object)
    part[(part == "") & ~images["upper_limb"]] = OUT_OF_SCOPE
    rest = images.index[part == ""]
    fold_splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(fold_splitter.split(rest, images.loc[rest, "fractured"], groups=groups[rest])):
        part[rest[held]] = fold_name(fold)
    return images.assign(copy_group=groups, part=part)[list(_COLUMNS)]


def read_split(path: Path) -> pd.DataFrame:
    """Read and check a split file: every copy group on one side, every row in a known part."""
    try:
        split = pd.read_csv(path, dtype={"file": str, "part": str, "copy_group": str})
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise SplitError(f"The FracAtlas split {path.name} cannot be read ({type(exc).__name__}).") from exc
    missing = [c for c in _COLUMNS if c not in split.columns]
    if missing:
        raise SplitError(f"The FracAtlas split {path.name} lacks the column(s) {', '.join(missing)}.")
    if (split.groupby("copy_group")["part"].nunique() > 1).any():
        raise SplitError(f"The FracAtlas split {path.name} puts copies of one radiograph in different parts.")
    return split


def trained_files(split: pd.DataFrame) -> frozenset[str]:
    """Every file some member fitted: the rows of the training folds (each is fitted by all but one member)."""
    return frozenset(split.loc[split["part"].str.fullmatch(r"fold\d+"), "file"])


def training_rows(split: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fitted, held-out) rows for the member of ``fold``: the other folds, and fold ``fold``."""
    fitted = split["file"].isin(trained_files(split)) & (split["part"] != fold_name(fold))
    return split[fitted], split[split["part"] == fold_name(fold)]


def trained_on(split: pd.DataFrame, file: str) -> bool:
    """Whether some member of the model fitted ``file``."""
    return file in trained_files(split)
