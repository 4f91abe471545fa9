"""Write weights/mura_efficientnet_lite0_fracture from the four trained folds and the rule's outcome.

    python scripts/assemble_fracture_model.py [--runs runs] [--outcome docs/fracture_training/outcome.json]

Takes the candidate the rule chose (scripts/fracture_outcome.py), attaches each fold's branch to the
matching member of the shipped ensemble (core.model.fracture_model.assemble) and writes checkpoint,
card, the MURA out-of-fold predictions (the base model's own) and the fracture out-of-fold predictions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.model.checkpoint import DEFAULT_MODEL
from core.model.fracture_model import assemble
from core.store.artifacts import ModelArtifacts

NAME = "mura_efficientnet_lite0_fracture"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--outcome", type=Path, default=Path("docs/fracture_training/outcome.json"))
    args = parser.parse_args()
    outcome = json.loads(args.outcome.read_text(encoding="utf-8"))
    candidate = outcome["rule"]["chosen"]
    runs = [args.runs / f"fracture_f{fold}" for fold in range(4)]
    card = assemble(ModelArtifacts.of(DEFAULT_MODEL), runs, candidate, ModelArtifacts.of(NAME), outcome)
    print(json.dumps(card["outputs"]["fracture"], indent=2))


if __name__ == "__main__":
    main()
