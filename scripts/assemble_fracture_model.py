"""Write weights/mura_efficientnet_lite0_fracture from the four trained folds and the rule's outcome.

    python scripts/assemble_fracture_model.py [--runs runs] [--outcome docs/fracture_training/outcome.json]
    python scripts/assemble_fracture_model.py --from-full FULL_CHECKPOINT
    python scripts/assemble_fracture_model.py --recalibrate

Takes the candidate the rule chose (scripts/fracture_outcome.py), attaches each fold's branch to the
matching member of the shipped ensemble (core.model.fracture_model.assemble) and writes the checkpoint
(the branches, stored as a delta on the base ensemble), the card and the fracture out-of-fold
predictions; the MURA-path files (holdout predictions, training log, scope, data map) are the base's.
``--from-full`` converts a checkpoint holding whole two-output members (how the model first shipped,
commit ecf2f18) into that delta and removes the model folder's copies of the base's MURA-path files.
``--recalibrate`` refits only the card's Platt scaling and fracture threshold from the out-of-fold predictions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.model.fracture_model import assemble, delta_from_full, recalibrate
from core.model.fracture_training import FRACTURE_BASE_MODEL
from core.store.artifacts import ModelArtifacts

NAME = "mura_efficientnet_lite0_fracture"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--outcome", type=Path, default=Path("docs/fracture_training/outcome.json"))
    parser.add_argument("--from-full", type=Path, help="a full two-output checkpoint to store as a delta instead")
    parser.add_argument("--recalibrate", action="store_true", help="refit only the card's calibration and threshold")
    args = parser.parse_args()
    base, out = ModelArtifacts.of(FRACTURE_BASE_MODEL), ModelArtifacts.of(NAME)
    if args.recalibrate:
        card = recalibrate(out)
        print(json.dumps({key: card[key] for key in ("fracture_threshold", "fracture_calibration")}, indent=2))
        return
    if args.from_full:
        for path in delta_from_full(args.from_full, base, out):
            print(f"removed {path} (a copy of {base.name}'s)")
        print(f"wrote {out.checkpoint} and {out.card}")
        return
    outcome = json.loads(args.outcome.read_text(encoding="utf-8"))
    candidate = outcome["rule"]["chosen"]
    runs = [args.runs / f"fracture_f{fold}" for fold in range(4)]
    card = assemble(base, runs, candidate, out, outcome)
    print(json.dumps(card["outputs"]["fracture"], indent=2))


if __name__ == "__main__":
    main()
