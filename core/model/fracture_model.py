"""Assemble the fracture-aware model from a shipped ensemble and its trained fracture branches.

Member *k* of the base ensemble gets the branch trained with fold *k* held out (core.model.fracture_training),
so the model is an ensemble of four two-output networks: P(abnormal) is the base ensemble's own,
P(fracture) the mean of the four branches. The checkpoint stores only the branches and the base's name
and hash (core.model.checkpoint.save_fracture_checkpoint); the MURA-path artefacts (holdout predictions,
training log, scope head, data map) are the base folder's, read from there (ModelArtifacts.resolve).
The card names the base, keeps the base card's MURA sections and adds the fracture output's: what it
was trained on, its threshold (chosen on the out-of-fold predictions of the training folds, never the
test part) and its out-of-fold figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.data import fracture_split
from core.eval.metrics import auroc, calibration
from core.model.card import read_card, write_card
from core.model.checkpoint import CALIBRATION_KEY, save_fracture_checkpoint
from core.model.fracture_net import BRANCH_FIRST_BLOCK, BRANCH_LAST_BLOCK, TwoOutputNet
from core.model.fracture_training import FractureConfig, branch_file, load_member, oof_file
from core.model.registry import create_model
from core.model.thresholds import apply_platt, choose_threshold, fit_platt
from core.store import atomic
from core.store.artifacts import BASE_MODEL_KEY, MURA_PATH_FILES, ModelArtifacts

__all__ = ["FRACTURE_ARCH", "FRACTURE_INPUT_SIZE", "FRACTURE_OOF", "assemble", "delta_from_full", "fracture_card"]

FRACTURE_ARCH = "efficientnet_lite0_fracture"
FRACTURE_INPUT_SIZE = 224
#: The dataset name of the out-of-fold fracture predictions (``predictions_fracatlas_oof.csv``).
FRACTURE_OOF = "fracatlas_oof"


def assemble(
    base: ModelArtifacts, runs: list[Path], candidate: str, out: ModelArtifacts, outcome: dict[str, Any]
) -> dict[str, Any]:
    """Write the checkpoint (a delta on ``base``), the card (naming ``base``) and the fracture
    out-of-fold predictions of the model to ``out``."""
    nets: list[TwoOutputNet] = []
    for fold, run in enumerate(runs):
        net = TwoOutputNet(load_member(base.name, fold, base.directory.parent))
        state = torch.load(branch_file(run, candidate), map_location="cpu", weights_only=True)
        net.fracture.load_state_dict({k: v.float() for k, v in state.items()})
        nets.append(net)
    out.directory.mkdir(parents=True, exist_ok=True)
    save_fracture_checkpoint(out.checkpoint, nets, FRACTURE_ARCH, FRACTURE_INPUT_SIZE, base)
    oof = pd.concat([pd.read_csv(oof_file(run, candidate)) for run in runs], ignore_index=True)
    atomic.write_text(out.predictions(FRACTURE_OOF), oof.to_csv(index=False))
    split = fracture_split.read_split(out.directory / fracture_split.SPLIT_FILE)
    card = calibrate_card(fracture_card(read_card(base.card), oof, split, candidate, outcome), oof)
    write_card(out.card, card | {"name": out.name, BASE_MODEL_KEY: base.name})
    return card


def recalibrate(out: ModelArtifacts) -> dict[str, Any]:
    """Refit the calibration and threshold of an assembled model's card from its out-of-fold predictions
    (the weights are untouched); returns the new card."""
    card = calibrate_card(read_card(out.card), pd.read_csv(out.predictions(FRACTURE_OOF)))
    write_card(out.card, card)
    return card


def delta_from_full(full: Path, base: ModelArtifacts, out: ModelArtifacts) -> list[Path]:
    """Rewrite a full two-output ensemble checkpoint (every member's MURA network and branch, as the
    model first shipped) as a delta on ``base`` in ``out``, name ``base`` in ``out``'s card and remove
    ``out``'s MURA-path files that are byte-identical copies of ``base``'s; the removed files are returned.

    Raises:
        ValueError: a member's MURA network is not the matching member of ``base`` (nothing is written).
    """
    checkpoint = torch.load(full, map_location="cpu", weights_only=True)
    nets: list[TwoOutputNet] = []
    for state in checkpoint["members"]:
        net = create_model(checkpoint["arch"])
        if not isinstance(net, TwoOutputNet):
            raise ValueError(f"{full} holds {checkpoint['arch']!r} members, not two-output networks.")
        net.load_state_dict({k: v.float() for k, v in state.items()})
        nets.append(net)
    save_fracture_checkpoint(out.checkpoint, nets, checkpoint["arch"], checkpoint["input_size"], base)
    write_card(out.card, read_card(out.card) | {BASE_MODEL_KEY: base.name})
    removed = []
    for name in sorted(MURA_PATH_FILES):
        own, shared = out.directory / name, base.directory / name
        if own.is_file() and shared.is_file() and own.read_bytes() == shared.read_bytes():
            own.unlink()
            removed.append(own)
    return removed


def calibrate_card(card: dict[str, Any], oof: pd.DataFrame) -> dict[str, Any]:
    """``card`` with the fracture output's Platt scaling and threshold, both from the out-of-fold
    predictions of the training folds (each image scored by the branch that never saw it): the
    branches' raw P(fracture) runs high (class-weighted loss, log-sum-exp pool), so the card maps it
    onto observed frequencies; the threshold then maximises kappa on the calibrated predictions."""
    labels, raw = oof["fractured"].to_numpy(), oof["probability"].to_numpy()
    slope, intercept = fit_platt(labels, raw)
    calibrated = apply_platt(raw, slope, intercept)
    threshold = choose_threshold(labels, calibrated)
    fracture = dict(card["outputs"]["fracture"])
    fracture |= {
        "threshold": round(threshold, 4),
        "threshold_rule": "maximise Cohen's kappa on the calibrated out-of-fold predictions of the training "
        "folds (each image predicted by the branch that never saw it); the test part unused",
    }
    return card | {
        "outputs": card["outputs"] | {"fracture": fracture},
        "fracture_threshold": round(threshold, 4),
        CALIBRATION_KEY: {
            "method": "Platt scaling: P(fracture) = sigmoid(slope * logit(ensemble mean) + intercept), per view "
            "before the mirror average",
            "slope": round(slope, 6),
            "intercept": round(intercept, 6),
            "fitted_on": f"{len(oof)} out-of-fold predictions of the training folds ({int(labels.sum())} fractured)",
            "out_of_fold_ece": {
                "raw": _ece(labels, raw),
                "calibrated": _ece(labels, calibrated),
            },
        },
    }


def _ece(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    value = calibration(labels, probabilities)[1]
    return None if value is None else round(value, 4)


def fracture_card(
    base: dict[str, Any], oof: pd.DataFrame, split: pd.DataFrame, candidate: str, outcome: dict[str, Any]
) -> dict[str, Any]:
    """The base card plus the fracture output's training data, threshold and out-of-fold figures."""
    out_of_fold = auroc(oof["fractured"], oof["probability"])
    counts = split.groupby("part").agg(images=("file", "size"), fractured=("fractured", "sum"))
    recipe = FractureConfig(fracatlas="", fold=0, out="", split="")
    return base | {
        "architecture": FRACTURE_ARCH,
        "description": "Two outputs: the shipped 4-fold EfficientNet-Lite0 ensemble's P(abnormal), unchanged, and "
        f"P(fracture) from a branch on each member's stride-8 features (a trained copy of blocks "
        f"{BRANCH_FIRST_BLOCK + 1}-{BRANCH_LAST_BLOCK + 1}, a 1x1 map at stride 16, log-sum-exp "
        "pooled) whose own map is its Grad-CAM.",
        "output": "two logits: [0] abnormal (MURA: sigmoid = P(abnormal), study = mean of its views); "
        "[1] fracture (sigmoid = P(fracture) of the radiograph, FracAtlas's label)",
        "outputs": {
            "abnormal": {
                "trained_on": base["training_data"]["source"],
                "threshold": "per study type, in this card's thresholds (the base model's own)",
            },
            "fracture": {
                "trained_on": "FracAtlas (CC BY 4.0) upper-limb radiographs (hand, shoulder, whole arm) outside "
                "the fixed test part, 4 folds by copy group; member k's branch trained with fold k "
                "held out; leg/hip never trained on",
                "candidate": candidate,
                "outline_loss_weight": recipe.outline_weights[candidate],
                "parts": {
                    part: {"images": int(row.images), "fractured": int(row.fractured)}
                    for part, row in counts.iterrows()
                },
                "out_of_fold_auroc": None if out_of_fold is None else round(out_of_fold, 4),
                "recipe": {
                    k: v for k, v in vars(recipe).items() if k not in ("fracatlas", "fold", "out", "split", "threads")
                },
                "rule_outcome": outcome,
            },
        },
        "limitations": [
            *base.get("limitations", []),
            "The fracture output was trained on FracAtlas (three Bangladeshi hospitals); MURA radiographs are "
            "outside its training data, and its label is fracture, not MURA's abnormal.",
        ],
    }
