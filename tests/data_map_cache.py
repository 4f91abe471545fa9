"""A data-map cache for a scratch model folder (what ``python -m core.embeddings`` writes), built from
seeded synthetic features so dashboard tests need no extraction: two clusters by label, a planted
label flip in train/ and a planted copy of a train/ image in valid/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core import embeddings
from core.artifacts import ModelArtifacts
from core.evaluate import PREDICTION_COLUMNS


def write_data_map_cache(model_dir: Path, mura_root: Path) -> tuple[dict, str]:
    """Write out-of-fold train predictions and every data-map file into ``model_dir``.

    Returns the summary and the train/ study whose label the planted probabilities contradict.
    """
    from core import mura

    files = ModelArtifacts(model_dir)
    valid = pd.read_csv(files.predictions("valid"))
    train = mura.read_images(mura_root, "train")
    logits = 2.5 * (2 * train["label"].to_numpy() - 1) + np.random.default_rng(3).normal(0, 0.8, len(train))
    flipped = str(train["study_path"].iloc[0])
    logits[train["study_path"].to_numpy() == flipped] *= -3  # planted: confidently against its label
    train = train.assign(probability=np.round(1 / (1 + np.exp(-logits)), 6))[PREDICTION_COLUMNS]
    train.to_csv(files.holdout_predictions, index=False)
    rows = pd.concat([pd.DataFrame({"dataset": "mura_train", "key": train["path"], "fold": 0}),
                      pd.DataFrame({"dataset": "mura_valid", "key": valid["path"], "fold": -1})], ignore_index=True)
    labels = np.concatenate([train["label"].to_numpy(), valid["label"].to_numpy()])
    rng = np.random.default_rng(0)
    features = np.abs(labels[:, None] * 3.0 + rng.normal(0, 0.5, (len(rows), 16))).astype(np.float32)
    phash = rng.integers(0, 2, (len(rows), 64)).astype(bool)
    phash[len(train)] = phash[0]  # planted: valid/'s first image is a copy of train/'s first
    images = rows.assign(study=embeddings.study_table(rows).to_numpy())
    xy = embeddings.project(features, method="pca")
    images = images.assign(x=xy[:, 0], y=xy[:, 1], pca_x=xy[:, 0], pca_y=xy[:, 1])
    studies, neighbours, distances = embeddings.nearest_studies(features, images["study"])
    cache = embeddings.Embeddings(images, features, phash, studies, neighbours, distances,
                                  {"projection": "pca", "seed": 0})
    return embeddings.write_cache(files, cache, features, None), flipped
