"""Train a registered architecture on MURA ``train/`` with a patient-level validation split.

The command line only; the library is :mod:`core.model.training`.
"""

from __future__ import annotations

import argparse
import sys

from core.cli import add_settings, run_or_report
from core.model.registry import get_config
from core.model.training import TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.train``; returns the exit status (2 on bad settings or data)."""
    parser = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--out", required=True, help="output folder, e.g. runs/fold0")
    parser.add_argument("--study-types", nargs="+", default=list(TrainConfig.study_types))
    parser.add_argument("--device", default=TrainConfig.device, help="cpu (default) or a CUDA device, e.g. cuda")
    integers = ("input_size", "epochs", "batch_size", "seed", "split_seed", "folds", "fold", "threads", "workers")
    add_settings(parser, TrainConfig, integers, int)
    floats = ("max_lr", "weight_decay", "label_smoothing", "rotation", "holdout_fraction", "train_fraction")
    add_settings(parser, TrainConfig, floats, float)
    parser.add_argument("--duplicates", help="core.embeddings' duplicates.csv: keep patients sharing copies together")
    parser.add_argument("--fracatlas", help="FracAtlas root: joint training with its upper-limb fracture labels")
    parser.add_argument(
        "--study-loss", action="store_true", help="batches of whole studies, loss on each study's mean view probability"
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="NHWC tensors: the same training, about 1.45x faster on CPU"
    )
    parser.add_argument(
        "--no-bf16",
        dest="bf16",
        action="store_false",
        help="train in fp32 (bf16 autocast is the default: about 3x faster on AVX512-BF16 CPUs)",
    )
    parser.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        help="random initialisation instead of torchvision's ImageNet weights",
    )
    args = vars(parser.parse_args(argv))
    args["study_types"] = tuple(args["study_types"])

    def work() -> None:
        get_config(args["arch"])  # an unknown architecture: one line naming the known ones
        train(TrainConfig(**args))

    return run_or_report(work)


if __name__ == "__main__":
    sys.exit(main())
