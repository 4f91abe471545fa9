"""A data-map cache for a scratch model folder (what ``python -m core.embeddings`` writes), built from
seeded synthetic features so dashboard tests need no extraction: two clusters by label, a planted
label flip in train/ and a planted copy of a train/ image in valid/."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.datamap import embeddings
from core.eval.evaluation import PREDICTION_COLUMNS
from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import ModelArtifacts


def write_data_map_cache(model_dir: Path, mura_root: Path) -> tuple[dict, str]:
    """Write out-of-fold train predictions and every data-map file into ``model_dir``.

    Returns the summary and the train/ study whose label the planted probabilities contradict.
    """
    from core.data import mura

    files = ModelArtifacts(model_dir)
    valid = pd.read_csv(files.predictions("valid"))
    train = mura.read_images(mura_root, "train")
    logits = 2.5 * (2 * train["label"].to_numpy() - 1) + np.random.default_rng(3).normal(0, 0.8, len(train))
    flipped = str(train["study_path"].iloc[0])
    probability = np.round(1 / (1 + np.exp(-logits)), 6)
    planted = train["study_path"].to_numpy() == flipped
    probability[planted] = np.where(train["label"].to_numpy()[planted] == 1, 0.002, 0.998)  # sure it is not so
    train = train.assign(probability=probability)[PREDICTION_COLUMNS]
    train.to_csv(files.holdout_predictions, index=False)
    rows = pd.concat(
        [
            pd.DataFrame({"dataset": "mura_train", "key": train["path"], "fold": 0}),
            pd.DataFrame({"dataset": "mura_valid", "key": valid["path"], "fold": -1}),
        ],
        ignore_index=True,
    )
    labels = np.concatenate([train["label"].to_numpy(), valid["label"].to_numpy()])
    rng = np.random.default_rng(0)
    features = (labels[:, None] * 3.0 + rng.normal(0, 1.0, (len(rows), 16))).astype(np.float32)
    phash = rng.integers(0, 2, (len(rows), 64)).astype(bool)
    phash[len(train)] = phash[0]  # planted: valid/'s first image is a copy of train/'s first
    images = rows.assign(study=embeddings.study_table(rows).to_numpy())
    xy = embeddings.project(features, method="pca")
    images = images.assign(x=xy[:, 0], y=xy[:, 1], pca_x=xy[:, 0], pca_y=xy[:, 1])
    studies, neighbours, distances = embeddings.nearest_studies(features, images["study"])
    cache = embeddings.Embeddings(
        images, features, phash, studies, neighbours, distances, {"projection": "pca", "seed": 0}
    )
    return embeddings.write_cache(files, cache, features, None), flipped


@pytest.fixture(scope="module")
def map_weights(
    tmp_path_factory: pytest.TempPathFactory, scratch_weights: Path, scratch_mura_root: Path
) -> tuple[Path, dict, str]:
    """A copy of scratch_weights with a data-map cache in its model folder: (folder, summary, flipped study)."""
    directory = tmp_path_factory.mktemp("map_weights")
    shutil.copytree(scratch_weights / DEFAULT_MODEL, directory / DEFAULT_MODEL)
    summary, flipped = write_data_map_cache(directory / DEFAULT_MODEL, scratch_mura_root)
    return directory, summary, flipped
