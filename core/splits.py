"""Patient-level splits of MURA ``train/``: every patient's images on one side only.

MURA patients have several studies and views; splitting images or studies would put the same
bones on both sides and flatter the holdout. Ensemble members and learning curves share these
splits, so they live apart from the training loop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit

__all__ = ["patient_split", "patient_subset"]


def patient_split(
    images: pd.DataFrame, fraction: float, seed: int, *, folds: int = 0, fold: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (training, holdout) rows, with every patient on one side only.

    ``folds`` > 1 holds out fold ``fold`` of a shuffled patient-level K-fold split (the folds of
    one seed are disjoint and cover every patient); otherwise a random ``fraction`` of patients.
    """
    if folds > 1:
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
        splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(splitter.split(images, groups=images["patient"]))[fold]
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    train_idx, holdout_idx = next(splitter.split(images, groups=images["patient"]))
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
