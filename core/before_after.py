"""Draw the Heat-map accuracy page's before/after gallery: the same FracAtlas test images under the model that
learned MURA's abnormal label and under the fracture-aware model built on it
(``python -m core.before_after [--root data_samples/fracatlas]``).

The command line only; the library is :mod:`core.eval.before_after`. It prints the seconds each map took.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.data import fracatlas
from core.eval.before_after import GALLERY_SIZE, model_pair, write_gallery
from core.model.checkpoint import DEFAULT_MODEL
from core.model.prediction import configure_threads
from core.model.registry import ModelLoadError
from core.store.artifacts import report_written

_SAMPLES = Path(__file__).resolve().parent.parent / "data_samples" / "fracatlas"


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.before_after``; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m core.before_after", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root",
        default=str(_SAMPLES),
        help="a FracAtlas folder to draw from (default: the samples shipped with the app, so the page can show them)",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="either model of the pair (a folder under weights/)")
    parser.add_argument("--size", type=int, default=GALLERY_SIZE, help="images in the gallery")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    args = parser.parse_args(argv)
    configure_threads(args.threads)

    def write() -> list[Path]:
        pair = model_pair(args.model)
        if pair is None:
            raise ValueError("No shipped model with a fracture output names a shipped base model, so there is no pair.")
        return [write_gallery(pair, fracatlas.resolve_root(args.root), size=args.size)]

    return report_written(write, (fracatlas.FracAtlasError, ModelLoadError, OSError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
