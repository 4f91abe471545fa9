"""Operating thresholds and holdout summaries chosen on train/'s held-out patients, never on valid/.

core.train calls these for one run and core.ensemble for the averaged members, so both cards
choose thresholds the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from core.eval.metrics import study_table
from core.model.card import DEFAULT_THRESHOLD_KEY

__all__ = ["choose_threshold", "holdout_summary", "fit_platt", "apply_platt"]


def fit_platt(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """Platt scaling (slope, intercept) of held-out probabilities: a logistic regression of the label
    on their logit (scikit-learn, effectively unpenalised), so that sigmoid(slope * logit + intercept)
    matches the observed frequencies. Fit on predictions the scored model never trained on."""
    scores = logit(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-6, 1 - 1e-6)).reshape(-1, 1)
    regression = LogisticRegression(C=1e6).fit(scores, np.asarray(labels, dtype=int))
    slope, intercept = float(regression.coef_[0, 0]), float(regression.intercept_[0])
    if not slope > 0:
        raise ValueError(f"Platt slope {slope:.3g} is not positive: these scores do not rank the labels.")
    return slope, intercept


def apply_platt(probabilities: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """The calibrated probabilities of :func:`fit_platt` (a monotone map: ranks and AUROC unchanged)."""
    clipped = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-6, 1 - 1e-6)
    return expit(slope * logit(clipped) + intercept)


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Threshold that maximises Cohen's kappa (the MURA paper's metric) on holdout studies."""
    candidates = np.unique(np.round(probabilities, 4))
    best_threshold, best_kappa = 0.5, -1.0
    for threshold in candidates:
        kappa = cohen_kappa_score(labels, (probabilities >= threshold).astype(int))
        if kappa > best_kappa + 1e-9:
            best_threshold, best_kappa = float(threshold), kappa
    return best_threshold


def holdout_summary(holdout: pd.DataFrame) -> tuple[dict[str, float], dict[str, dict]]:
    """Per-body-part thresholds (max study kappa) and study AUROCs on the holdout predictions."""
    studies = study_table(holdout)
    everything = choose_threshold(studies["label"].to_numpy(), studies["probability"].to_numpy())
    thresholds = {DEFAULT_THRESHOLD_KEY: everything}
    metrics = {}
    for study_type, group in studies.groupby("study_type"):
        thresholds[study_type] = choose_threshold(group["label"].to_numpy(), group["probability"].to_numpy())
        predicted = (group["probability"] >= thresholds[study_type]).astype(int)
        metrics[study_type] = {
            "study_auroc": round(roc_auc_score(group["label"], group["probability"]), 4),
            "study_kappa_at_threshold": round(cohen_kappa_score(group["label"], predicted), 4),
            "studies": int(len(group)),
        }
    return thresholds, metrics
