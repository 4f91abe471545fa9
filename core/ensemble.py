"""Combine trained members of one architecture into one shipped model.

    python -m core.ensemble --members runs/a runs/b --out weights/NAME

Members must come from ``core.train`` with the same architecture, input size and holdout split
(same ``--split-seed``). The ensemble's probability is the mean of its members' probabilities,
so its holdout predictions are the mean of theirs; thresholds are re-chosen on them exactly as
``core.train`` does for one model. Nothing here looks at MURA ``valid/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from core import atomic
from core.models import CARD_FILE, CHECKPOINT_FILE, ModelLoadError, load_model, save_ensemble_checkpoint
from core.train import LOG_FILE, VAL_PREDICTIONS_FILE, holdout_summary

__all__ = ["combine", "main"]


def combine(member_dirs: list[Path], out: Path) -> dict:
    """Write checkpoint, holdout predictions, log and card of the ensemble to ``out``."""
    if len(member_dirs) < 2:
        raise ValueError("an ensemble needs at least two members")
    members = [load_model(d.name, directory=d.parent) for d in member_dirs]
    archs = {m.config.name for m in members}
    sizes = {m.input_size for m in members}
    splits = {m.card["training_data"]["split"] for m in members}
    if len(archs) != 1 or len(sizes) != 1 or len(splits) != 1:
        raise ValueError("members differ in architecture, input size or holdout split")
    arch, input_size = archs.pop(), sizes.pop()

    holdouts = [pd.read_csv(d / VAL_PREDICTIONS_FILE).set_index("path") for d in member_dirs]
    if any(not h.index.equals(holdouts[0].index) for h in holdouts):
        raise ValueError("members were validated on different holdout images")
    holdout = holdouts[0].assign(
        probability=sum(h["probability"] for h in holdouts) / len(holdouts)
    ).reset_index()
    thresholds, metrics = holdout_summary(holdout)

    out.mkdir(parents=True, exist_ok=True)
    save_ensemble_checkpoint(out / CHECKPOINT_FILE, [m.model for m in members], arch, input_size)
    atomic.write_text(out / VAL_PREDICTIONS_FILE, holdout.to_csv(index=False))
    logs = [pd.read_csv(d / LOG_FILE).assign(member=i) for i, d in enumerate(member_dirs)]
    atomic.write_text(out / LOG_FILE, pd.concat(logs).to_csv(index=False))

    cards = [m.card for m in members]
    base = cards[0]
    card = base | {
        "name": out.name,
        "description": f"Mean-probability ensemble of {len(members)} {arch} models (different seeds). "
                       + base["description"],
        "members": [
            {"seed": card["recipe"]["seed"], "best_epoch": card["best_epoch"],
             "training_time_seconds": card["training_time_seconds"], "holdout_metrics": card["holdout_metrics"]}
            for card in cards
        ],
        "training_time_seconds": sum(card["training_time_seconds"] for card in cards),
        "holdout_metrics": metrics,
        "thresholds": thresholds,
    }
    del card["best_epoch"]
    atomic.write_text(out / CARD_FILE, json.dumps(card, indent=2) + "\n")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.ensemble", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", nargs="+", type=Path, required=True, help="core.train output folders")
    parser.add_argument("--out", type=Path, required=True, help="e.g. weights/mura_mobilenet_v2")
    args = parser.parse_args(argv)
    try:
        card = combine(args.members, args.out)
    except (OSError, ValueError, KeyError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(card["holdout_metrics"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
