"""Evaluate a shipped model on a MURA split and cache the results for the dashboard.

    python -m core.evaluate --mura-root PATH --split valid [--model NAME] [--n-boot 1000] [--force]

writes, atomically, ``weights/<model>/predictions_<split>.csv`` (one row per present image,
keyed by its official path) and ``weights/<model>/metrics_<split>.json`` (image and study level,
overall and per body part, with bootstrap CIs). The dashboard only reads these files.
Whatever part of the split is present is evaluated; the JSON records the coverage. A cached
evaluation of more images is not replaced by one of fewer (a partial MURA copy) without ``--force``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from core import mura
from core.artifacts import ModelArtifacts, check_replacement, write_evaluation
from core.card import card_thresholds, threshold_for
from core.metrics import DEFAULT_N_BOOT, summarise
from core.models import DEFAULT_MODEL, LoadedModel, ModelLoadError, load_model
from core.predict import DEFAULT_BATCH_SIZE, DEFAULT_THREADS, configure_threads, model_inputs, predict_batch

__all__ = ["PREDICTION_COLUMNS", "predict_split", "evaluate", "main"]

PREDICTION_COLUMNS = ["path", "study_type", "patient", "study", "study_path", "label", "probability"]


def _batches(root: Path, paths: list[str], loaded: LoadedModel, batch_size: int) -> Iterator[torch.Tensor]:
    """Decode and letterbox the next batch in a background thread while the model runs.

    Pillow's PNG decoder and torch's resize release the GIL, so one prefetch thread hides most
    of the decoding cost behind inference.
    """
    from core.imaging import load_radiograph

    def prepare(chunk: list[str]) -> torch.Tensor:
        return model_inputs(loaded, [load_radiograph(mura.image_file(root, p)).pixels for p in chunk])

    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, chunks[0]) if chunks else None
        for next_chunk in chunks[1:] + [None]:
            batch = pending.result()
            pending = pool.submit(prepare, next_chunk) if next_chunk else None
            yield batch


def predict_split(loaded: LoadedModel, root: Path, split: str, *, batch_size: int = DEFAULT_BATCH_SIZE,
                  progress: bool = True, limit: int | None = None) -> pd.DataFrame:
    """One row per present image of ``split`` (the first ``limit`` only, for benchmarks):
    official path, metadata, label, probability."""
    images = mura.read_images(root, split).iloc[:limit]
    probabilities = []
    with tqdm(total=len(images), desc=f"{loaded.name} on {split}", unit="img", disable=not progress) as bar:
        for batch in _batches(root, images["path"].tolist(), loaded, batch_size):
            probabilities.append(predict_batch(loaded, batch))
            bar.update(len(batch))
    # Rounded once here, so the cached CSV and every metric computed from it agree exactly.
    images = images.assign(probability=np.round(np.concatenate(probabilities), 6) if probabilities else [])
    return images[PREDICTION_COLUMNS]


def evaluate(model_name: str, root: Path, split: str, *, n_boot: int = DEFAULT_N_BOOT,
             batch_size: int = DEFAULT_BATCH_SIZE, force: bool = False) -> tuple[Path, Path]:
    """Predict ``split`` and write predictions and metrics beside the model's checkpoint.

    Refuses (before predicting) to replace a cached evaluation of more images unless ``force``.
    """
    loaded = load_model(model_name)
    files = ModelArtifacts(loaded.directory)
    check_replacement(files, split, len(mura.read_images(root, split)), force=force)
    started = time.perf_counter()
    predictions = predict_split(loaded, root, split, batch_size=batch_size)
    seconds = time.perf_counter() - started
    thresholds = card_thresholds(loaded.card)
    by_type = {t: threshold_for(thresholds, t) for t in predictions["study_type"].unique()}
    metrics = summarise(predictions, by_type, n_boot=n_boot, seed=0)
    metrics["evaluation"] = {
        "model": model_name,
        "split": split,
        "images": int(len(predictions)),
        "studies": int(predictions["study_path"].nunique()),
        "coverage": mura.coverage(root).query("split == @split").to_dict(orient="records"),
        "thresholds": by_type,
        "seconds": round(seconds, 1),
        "images_per_second": round(len(predictions) / seconds, 2) if seconds else None,
        "torch_threads": torch.get_num_threads(),
    }
    return write_evaluation(files, split, predictions, metrics, force=force)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", required=True, help="the MURA-v1.1 folder")
    parser.add_argument("--split", choices=mura.SPLITS, default="valid")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a folder under weights/")
    parser.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT, help="bootstrap resamples for the intervals")
    parser.add_argument("--bootstrap", dest="n_boot", type=int, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)  # the name --n-boot had before, still accepted
    parser.add_argument("--force", action="store_true",
                        help="replace a cached evaluation even when it covers more images than this one")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    try:
        root = mura.resolve_root(args.mura_root)
        paths = evaluate(args.model, root, args.split, n_boot=args.n_boot, batch_size=args.batch_size,
                         force=args.force)
    except (mura.MuraRootError, ModelLoadError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
