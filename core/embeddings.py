"""Embeddings of every evaluated radiograph: features, a 2-D map and nearest neighbours, cached offline.

Why: "where is the model wrong?" is followed by "why, and is it the model or the data?". The answer
needs each image's place in the model's own feature space (which cases it thinks look alike), its
perceptual hash (copies across splits), and a map of all of them. Computing those takes minutes, so
``python -m core.embeddings`` does it once and the dashboard only reads the result.

What is embedded: MURA ``train/`` and ``valid/`` humerus and forearm images and the FracAtlas images
that ``core.evaluate`` scored. The shipped model is a 4-member ensemble, member *k* trained on every
fold of a patient-level split of ``train/`` except fold *k*:

* a ``train/`` image of fold *k* is embedded by member *k* only, the one member that never saw it
  (out of fold; features from the members that trained on it would put it where training pulled it);
* ``valid/`` and FracAtlas images, unseen by every member, are embedded by all four.

The four members share an ImageNet start but not their feature coordinates, so each member's
features are rotated onto member 0's with an orthogonal Procrustes fit on the images no member
saw (``valid/`` and FracAtlas); a held-out image is then the mean of its four rotated vectors and a
``train/`` image its own member's rotated vector. ``alignment_r2`` in the cache says how well the
rotation fits (1 = members agree exactly).

Files (names in :class:`core.artifacts.ModelArtifacts`): ``embeddings.npz`` in the model folder,
float16 features and float32 map coordinates keyed by official path / FracAtlas file, with
precomputed study neighbours; no pixels. The raw per-member features are resumable chunks under
``runs/embeddings/<model>/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from core import atomic
from core.artifacts import TRAIN_HOLDOUT, ModelArtifacts
from core.models import DEFAULT_MODEL, LoadedModel, MeanProbabilityEnsemble
from core.predict import DEFAULT_BATCH_SIZE, model_inputs
from core.scope import network_features

__all__ = [
    "DATASETS",
    "NEIGHBOURS",
    "ImageSet",
    "Embeddings",
    "train_folds",
    "extract",
    "align_members",
    "combine_features",
    "project",
    "study_table",
    "nearest_studies",
    "build",
    "save",
    "load",
    "main",
]

#: Dataset names as the cache spells them, in the order images are stored.
DATASETS = ("mura_train", "mura_valid", "fracatlas")
#: Neighbours stored per study (the dashboard shows up to this many).
NEIGHBOURS = 10
_STUDY_TYPES = ("XR_HUMERUS", "XR_FOREARM")
_CHUNK = 64
_PCA_DIMENSIONS = 50
_HASH_BITS = 64


@dataclass(frozen=True)
class ImageSet:
    """One group of images embedded by the same members: its name, keys, files and the members to run."""

    name: str
    keys: list[str]
    files: list[Path]
    members: tuple[int, ...]


def train_folds(images: pd.DataFrame, folds: int, split_seed: int) -> np.ndarray:
    """The cross-validation fold of each ``train/`` image, as core.train split them (patient level)."""
    from core.train import patient_split

    fold_of = np.full(len(images), -1)
    for fold in range(folds):
        fold_of[patient_split(images, 0.0, split_seed, folds=folds, fold=fold)[1]] = fold
    return fold_of


def _members(loaded: LoadedModel) -> list[torch.nn.Module]:
    model = loaded.model
    return list(model.members) if isinstance(model, MeanProbabilityEnsemble) else [model]


def _phash(pixels: np.ndarray) -> np.ndarray:
    """The 64-bit DCT perceptual hash (imagehash.phash) as 64 booleans: a fingerprint, not pixels."""
    import imagehash
    from PIL import Image

    return imagehash.phash(Image.fromarray(pixels)).hash.ravel()


def _chunk_path(cache: Path, name: str, index: int) -> Path:
    return cache / f"{name}_{index:04d}.npz"


def extract(loaded: LoadedModel, image_sets: Sequence[ImageSet], cache: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per image set: keys, (N, members, D) float16 features and (N, 64) perceptual-hash bits.

    Resumable: each chunk of images is written to ``cache`` as it is done and read back on a rerun
    (only when it holds the same keys), so a killed run loses at most one chunk.
    """
    from core.imaging import load_radiograph

    cache.mkdir(parents=True, exist_ok=True)
    members = _members(loaded)
    out: dict[str, dict[str, np.ndarray]] = {}
    for image_set in image_sets:
        features, hashes = [], []
        starts = range(0, len(image_set.keys), _CHUNK)
        for index, start in enumerate(tqdm(starts, desc=image_set.name, unit="chunk")):
            keys = image_set.keys[start : start + _CHUNK]
            path = _chunk_path(cache, image_set.name, index)
            if path.is_file():
                with np.load(path, allow_pickle=False) as data:
                    if data["keys"].tolist() == keys:
                        features.append(data["features"])
                        hashes.append(data["phash"])
                        continue
            pixels = [load_radiograph(f).pixels for f in image_set.files[start : start + _CHUNK]]
            chunk = np.concatenate([
                np.stack([network_features(members[m], batch) for m in image_set.members], axis=1)
                for batch in (model_inputs(loaded, pixels[i : i + DEFAULT_BATCH_SIZE])
                              for i in range(0, len(pixels), DEFAULT_BATCH_SIZE))])
            bits = np.stack([_phash(p) for p in pixels])
            tmp = path.with_name(path.name + ".tmp.npz")
            np.savez(tmp, keys=np.array(keys), features=chunk.astype(np.float16), phash=bits)
            tmp.replace(path)
            features.append(chunk.astype(np.float16))
            hashes.append(bits)
        out[image_set.name] = {"keys": np.array(image_set.keys), "features": np.concatenate(features),
                               "phash": np.concatenate(hashes)}
    return out


def image_sets(loaded: LoadedModel, mura_root: Path | None, atlas_root: Path | None) -> tuple[list[ImageSet], pd.DataFrame]:
    """What to embed, and by which members, with one row per image (dataset, key, fold).

    The images are those of the model's cached predictions (train holdout, valid, FracAtlas), so
    every point on the map has a probability; a dataset whose folder is not given is left out.
    """
    from core import fracatlas, mura

    files = ModelArtifacts(loaded.directory)
    members = len(_members(loaded))
    everyone = tuple(range(members))
    sets: list[ImageSet] = []
    rows: list[pd.DataFrame] = []
    if mura_root is not None:
        recipe = loaded.card.get("recipe", {})
        train = mura.read_images(mura_root, "train")
        train = train[train["study_type"].isin(recipe.get("study_types", _STUDY_TYPES))].reset_index(drop=True)
        folds = int(recipe.get("folds") or 0)
        if folds != members:
            raise SystemExit(f"error: {loaded.name} is not a {folds}-fold cross-validation ensemble of {members} "
                             "members, so its train/ features cannot be out of fold")
        train["fold"] = train_folds(train, folds, int(recipe.get("split_seed", 0)))
        holdout = set(pd.read_csv(files.predictions(TRAIN_HOLDOUT))["path"])
        train = train[train["path"].isin(holdout)]
        for fold in range(folds):
            part = train[train["fold"] == fold]
            sets.append(ImageSet(f"mura_train_f{fold}", part["path"].tolist(),
                                 [mura.image_file(mura_root, p) for p in part["path"]], (fold,)))
            rows.append(pd.DataFrame({"dataset": "mura_train", "key": part["path"], "fold": fold}))
        valid = pd.read_csv(files.predictions("valid"))
        valid = valid[valid["study_type"].isin(_STUDY_TYPES)]
        sets.append(ImageSet("mura_valid", valid["path"].tolist(),
                             [mura.image_file(mura_root, p) for p in valid["path"]], everyone))
        rows.append(pd.DataFrame({"dataset": "mura_valid", "key": valid["path"], "fold": -1}))
    if atlas_root is not None:
        atlas = pd.read_csv(files.predictions("fracatlas"))
        sets.append(ImageSet("fracatlas", atlas["file"].tolist(),
                             [fracatlas.image_file(atlas_root, f) for f in atlas["file"]], (0,)))
        rows.append(pd.DataFrame({"dataset": "fracatlas", "key": atlas["file"], "fold": -1}))
    return sets, pd.concat(rows, ignore_index=True)
