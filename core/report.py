"""A self-contained PDF report of one model for people who will not open the app: from its caches.

The command line only; the library is :mod:`core.eval.report` (a model with a fracture output also gets its
test-part figures, the shipped samples' P(fracture), and two fracture maps drawn with the model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.eval.report import ReportError, build_report
from core.model.checkpoint import DEFAULT_MODEL
from core.store.atomic import AtomicWriteError, write_bytes


def _threshold(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not TYPE=VALUE, e.g. XR_HUMERUS=0.4") from None
    if not name or not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a body part and a threshold between 0 and 1")
    return name, number


def main(argv: list[str] | None = None) -> int:
    """``python -m core.report --model NAME --out FILE [--threshold XR_TYPE=VALUE ...]``."""
    parser = argparse.ArgumentParser(prog="python -m core.report", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a folder under weights/ (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="the PDF to write")
    parser.add_argument(
        "--threshold",
        type=_threshold,
        action="append",
        default=[],
        metavar="XR_TYPE=VALUE",
        help="draw the confusion matrices at this threshold instead of the card's (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        pdf = build_report(args.model, thresholds=dict(args.threshold))
        write_bytes(args.out, pdf)
    except (ReportError, AtomicWriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({len(pdf) // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
