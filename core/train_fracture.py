"""Train the fracture branch of one member on FracAtlas (core.model.fracture_training), candidates J and G.

python -m core.train_fracture --fracatlas PATH --fold K --out runs/fracture_fK [--candidates J G]
"""

from __future__ import annotations

import argparse
import sys

from core.cli import add_settings, run_or_report
from core.data import fracture_split
from core.model.fracture_training import CANDIDATES, FractureConfig, train_fold
from core.store.artifacts import weights_dir

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.train_fracture``; 2 on bad settings or data."""
    parser = argparse.ArgumentParser(prog="python -m core.train_fracture", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fracatlas", required=True, help="FracAtlas root (the folder holding labels.csv)")
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--split", default=str(weights_dir() / "mura_efficientnet_lite0_fracture" / fracture_split.SPLIT_FILE)
    )
    parser.add_argument("--base-model", default=FractureConfig.base_model)
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    add_settings(parser, FractureConfig, ("epochs", "batch_size", "seed", "threads"), int)
    args = vars(parser.parse_args(argv))
    args["candidates"] = tuple(args["candidates"])
    return run_or_report(lambda: train_fold(FractureConfig(**args)))


if __name__ == "__main__":
    sys.exit(main())
