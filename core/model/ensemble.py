"""Combine trained members of one architecture into one shipped model.

    python -m core.ensemble --members runs/a runs/b --out weights/NAME

Members come from ``core.train`` with one architecture and input size, and either
- the same holdout split (same ``--split-seed``, different ``--seed``): the ensemble's holdout
  predictions are the mean of the members', or
- different folds of one K-fold split (``--folds K --fold i``): each holdout image is predicted by
  the one member that never saw its patient, so thresholds are chosen on out-of-fold predictions
  for every fold present (all of train/ when every fold is there), not on one small holdout.
The ensemble's probability is the mean of its members' probabilities; thresholds are chosen on
the holdout predictions exactly as ``core.train`` does for one model. Nothing here looks at
MURA ``valid/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from core.model.card import NEVER_VALID, kfold_description, subset_counts, write_card
from core.model.checkpoint import load_model, save_ensemble_checkpoint
from core.model.thresholds import holdout_summary
from core.store import atomic
from core.store.artifacts import ModelArtifacts

__all__ = ["combine", "ensemble_card", "is_cross_validation", "out_of_fold"]


def combine(member_dirs: list[Path], out: Path) -> dict:
    """Write checkpoint, holdout predictions, log and card of the ensemble to ``out``."""
    if len(member_dirs) < 2:
        raise ValueError("an ensemble needs at least two members")
    members = [load_model(d.name, directory=d.parent) for d in member_dirs]
    archs = {m.config.name for m in members}
    sizes = {m.input_size for m in members}
    if len(archs) != 1 or len(sizes) != 1:
        raise ValueError("members differ in architecture or input size")
    arch, input_size = archs.pop(), sizes.pop()
    member_files = [ModelArtifacts(d) for d in member_dirs]
    holdouts = [pd.read_csv(files.holdout_predictions) for files in member_files]
    cross_validated = is_cross_validation([m.card for m in members], holdouts)
    holdout = out_of_fold(holdouts) if cross_validated else _shared_holdout(members, holdouts)
    thresholds, metrics = holdout_summary(holdout)

    out.mkdir(parents=True, exist_ok=True)
    files = ModelArtifacts(out)
    save_ensemble_checkpoint(files.checkpoint, [m.model for m in members], arch, input_size)
    atomic.write_text(files.holdout_predictions, holdout.to_csv(index=False))
    logs = [pd.read_csv(member.training_log).assign(member=i) for i, member in enumerate(member_files)]
    atomic.write_text(files.training_log, pd.concat(logs).to_csv(index=False))
    card = ensemble_card(
        out.name,
        arch,
        [m.card for m in members],
        cross_validated=cross_validated,
        holdout=holdout,
        thresholds=thresholds,
        holdout_metrics=metrics,
    )
    write_card(files.card, card)
    return card


def is_cross_validation(cards: list[dict], holdouts: list[pd.DataFrame]) -> bool:
    """True for members on distinct folds of one K-fold split; False for one shared holdout."""
    recipes = [card["recipe"] for card in cards]
    if all(r.get("folds", 0) <= 1 for r in recipes):
        return False
    if len({(r.get("folds"), r.get("split_seed")) for r in recipes}) != 1:
        raise ValueError("members come from different K-fold splits (folds or split seed differ)")
    if len({r.get("fold") for r in recipes}) != len(recipes):
        raise ValueError("two members were trained on the same fold")
    patients = [set(h["patient"]) for h in holdouts]
    if sum(len(p) for p in patients) != len(set().union(*patients)):
        raise ValueError("the members' holdout folds share patients")
    return True


def out_of_fold(holdouts: list[pd.DataFrame]) -> pd.DataFrame:
    """Every fold's holdout rows, predicted by the member that held that fold out."""
    return pd.concat(holdouts, ignore_index=True).sort_values("path", ignore_index=True)


def _shared_holdout(members: list, holdouts: list[pd.DataFrame]) -> pd.DataFrame:
    """The members' one holdout, with the mean of their probabilities (the ensemble's)."""
    if len({m.card["training_data"]["split"] for m in members}) != 1:
        raise ValueError("members differ in their holdout split")
    indexed = [h.set_index("path") for h in holdouts]
    if any(not h.index.equals(indexed[0].index) for h in indexed):
        raise ValueError("members were validated on different holdout images")
    return indexed[0].assign(probability=sum(h["probability"] for h in indexed) / len(indexed)).reset_index()


def ensemble_card(
    name: str,
    arch: str,
    cards: list[dict[str, Any]],
    *,
    cross_validated: bool,
    holdout: pd.DataFrame,
    thresholds: dict[str, float],
    holdout_metrics: dict[str, dict],
) -> dict[str, Any]:
    """The card of a mean-probability ensemble of ``arch`` members whose cards are ``cards`` (core.ensemble)."""
    base = cards[0]
    card = base | {
        "name": name,
        "description": f"Mean-probability ensemble of {len(cards)} {arch} models "
        + (
            "(one per fold of a patient-level cross-validation of train/). "
            if cross_validated
            else "(different seeds). "
        )
        + base["description"],
        "members": [
            {
                "seed": member["recipe"]["seed"],
                **({"fold": member["recipe"]["fold"]} if cross_validated else {}),
                "best_epoch": member["best_epoch"],
                "training_time_seconds": member["training_time_seconds"],
                "holdout_metrics": member["holdout_metrics"],
            }
            for member in cards
        ],
        "training_time_seconds": sum(member["training_time_seconds"] for member in cards),
        "holdout_metrics": holdout_metrics,
        "thresholds": thresholds,
    }
    del card["best_epoch"]
    # The members' own settings where they differ; everything else is the same for every member.
    card["recipe"] = base["recipe"] | {"seed": [member["recipe"]["seed"] for member in cards]}
    if cross_validated:
        recipe = card["recipe"]
        recipe["fold"] = [member["recipe"]["fold"] for member in cards]
        training_data = {k: v for k, v in base["training_data"].items() if k != "fit"}
        card["training_data"] = training_data | {
            "holdout": subset_counts(holdout),
            "split": f"{kfold_description(recipe['folds'], recipe['split_seed'])}; one member per fold, each "
            f"trained on the other folds; holdout = out-of-fold predictions; {NEVER_VALID}",
        }
        card["threshold_rule"] = (
            "maximise study-level Cohen's kappa on the out-of-fold predictions of train/ "
            "(each study predicted by the member that never saw its patient)"
        )
    return card
