"""Patient-level splits of MURA ``train/``: every patient's images on one side only.

MURA patients have several studies and views; splitting images or studies would put the same
bones on both sides and flatter the holdout. Ensemble members and learning curves share these
splits, so they live apart from the training loop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit

__all__ = ["patient_split", "patient_subset", "split_groups"]


def split_groups(images: pd.DataFrame, duplicates: pd.DataFrame | None = None) -> pd.Series:
    """The unit a split keeps whole: each image's patient, merged with every patient that shares a
    near-duplicate group with it (``duplicates``: rows of ``key`` = official path and ``group``).

    A merged set is named by its first patient in sorted order, so patients without copies keep
    their own name and the split of a data set without cross-patient copies does not change.
    """
    patients = images["patient"].astype(str)
    if duplicates is None or duplicates.empty:
        return patients
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    names = np.array(sorted(set(patients)))
    node = {name: i for i, name in enumerate(names)}
    patient_of = dict(zip(images["path"], patients, strict=True))
    linked = duplicates[duplicates["key"].isin(patient_of)]
    first = linked.groupby("group")["key"].transform("first")
    edges = [(node[patient_of[a]], node[patient_of[b]]) for a, b in zip(linked["key"], first, strict=True)]
    pairs = np.array(edges, dtype=int).reshape(-1, 2)
    rows, columns = pairs[:, 0], pairs[:, 1]
    graph = coo_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(names), len(names)))
    _, component = connected_components(graph, directed=False)
    leader = pd.Series(names).groupby(component).transform("first").to_numpy()  # names are sorted
    return patients.map(dict(zip(names, leader, strict=True)))


def patient_split(
    images: pd.DataFrame,
    fraction: float,
    seed: int,
    *,
    folds: int = 0,
    fold: int = 0,
    groups: pd.Series | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (training, holdout) rows, with every patient on one side only.

    ``folds`` > 1 holds out fold ``fold`` of a shuffled patient-level K-fold split (the folds of
    one seed are disjoint and cover every patient); otherwise a random ``fraction`` of patients.
    ``groups`` (default: the patient; see :func:`split_groups`) is the unit kept whole.
    """
    groups = images["patient"] if groups is None else groups
    if folds > 1:
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
        splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(images, groups=groups))[fold]
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    train_idx, holdout_idx = next(splitter.split(images, groups=groups))
    return train_idx, holdout_idx


def patient_subset(images: pd.DataFrame, indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The rows of ``indices`` whose patients come first in a seeded shuffle, ``fraction`` of them.

    Smaller fractions are subsets of larger ones (one shuffle, cut at different lengths), so a
    learning curve adds patients rather than swapping them.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"train fraction must be in (0, 1], got {fraction}")
    patients = images["patient"].to_numpy()[indices]
    shuffled = np.random.default_rng(seed).permutation(np.unique(patients))
    kept = shuffled[: max(1, round(fraction * len(shuffled)))]
    return indices[np.isin(patients, kept)]
