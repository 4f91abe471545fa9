"""Combine trained members of one architecture into one shipped model.

The command line only; the library is :mod:`core.model.ensemble`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.model.ensemble import combine
from core.model.registry import ModelLoadError


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.ensemble`` and print the holdout metrics; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m core.ensemble", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", nargs="+", type=Path, required=True, help="core.train output folders")
    parser.add_argument("--out", type=Path, required=True, help="e.g. weights/mura_efficientnet_lite0")
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
