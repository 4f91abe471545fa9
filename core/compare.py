"""Compare two models on the studies both have cached predictions for.

The command line only; the library is :mod:`core.eval.comparison`.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.cli import add_n_boot_argument
from core.eval.comparison import compare_models


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.compare`` and print its report; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m core.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs=2, required=True, metavar=("A", "B"), help="two folders under weights/")
    parser.add_argument("--split", default="valid", help="valid (core.evaluate) or train_holdout (core.train)")
    add_n_boot_argument(parser)
    args = parser.parse_args(argv)
    try:
        first, second = args.models
        report = compare_models(first, second, args.split, n_boot=args.n_boot)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
