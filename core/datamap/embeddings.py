"""Embeddings of every evaluated radiograph: features, a 2-D map and nearest neighbours, cached offline.

Design notes: docs/architecture.md, "Embeddings and the data map".
"""

from __future__ import annotations

import json
import os
import queue
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from core.model.checkpoint import LoadedModel
from core.model.prediction import DEFAULT_BATCH_SIZE, model_inputs
from core.model.registry import MeanProbabilityEnsemble
from core.scoping.head import network_features
from core.store import atomic
from core.store.artifacts import ModelArtifacts

if TYPE_CHECKING:  # for the annotation only; the functions import sklearn where they use it
    from sklearn.decomposition import PCA

__all__ = [
    "DATASETS",
    "NEIGHBOURS",
    "ImageSet",
    "Embeddings",
    "train_folds",
    "image_sets",
    "extract",
    "Alignment",
    "align_members",
    "combine_features",
    "project",
    "study_table",
    "nearest_studies",
    "build",
    "build_data_map",
    "label_issue_table",
    "write_cache",
    "save",
    "load",
]

#: Dataset names as the cache spells them, in the order images are stored.
DATASETS = ("mura_train", "mura_valid", "fracatlas")
#: Neighbours stored per study (the dashboard shows up to this many).
NEIGHBOURS = 10
_STUDY_TYPES = ("XR_HUMERUS", "XR_FOREARM")
_CHUNK = 64
_PCA_DIMENSIONS = 50
_HASH_BITS = 64
#: umap-learn's own cut-over from exact to approximate (pynndescent) neighbours.
_UMAP_EXACT_BELOW = 4096


@dataclass(frozen=True)
class ImageSet:
    """One group of images embedded by the same members: its name, keys, files and the members to run."""

    name: str
    keys: list[str]
    files: list[Path]
    members: tuple[int, ...]


def train_folds(images: pd.DataFrame, folds: int, split_seed: int) -> np.ndarray:
    """The cross-validation fold of each ``train/`` image, as core.train split them (patient level)."""
    from core.data.splits import patient_split

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


def _prepare(loaded: LoadedModel, files: Sequence[Path]) -> tuple[torch.Tensor, np.ndarray]:
    """One chunk's model inputs (N, 3, S, S) and perceptual-hash bits (N, 64): each file decoded once."""
    from core.data.imaging import load_radiograph

    pixels = [load_radiograph(f).pixels for f in files]
    return model_inputs(loaded, pixels), np.stack([_phash(p) for p in pixels])


def extract(
    loaded: LoadedModel,
    image_sets: Sequence[ImageSet],
    cache: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
    prefetch: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """Per image set: keys, (N, members, D) float16 features and (N, 64) perceptual-hash bits.

    Resumable: each chunk of images is written to ``cache`` as it is done and read back on a rerun
    (only when it holds the same keys), so a killed run loses at most one chunk.

    Speed (the forwards are nearly all of the time): with ``prefetch`` one background thread decodes,
    hashes and letterboxes the next chunk while the members run on this one; ``workers`` threads run
    batches of a chunk at once, each on its own copy of the members (core.scoping.head.network_features hooks
    the module it is given, so two threads must not share one) and one torch thread. On two cores two
    single-thread workers beat one two-thread forward, and far more so when other processes share the
    cores (torch's intra-op threads then wait on each other). Batches and their order are the same
    whatever ``workers`` is, so the features are identical.
    """
    cache.mkdir(parents=True, exist_ok=True)
    members = _members(loaded)
    done: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    todo: list[tuple[ImageSet, int, int]] = []
    for image_set in image_sets:
        for index, start in enumerate(range(0, len(image_set.keys), _CHUNK)):
            path = _chunk_path(cache, image_set.name, index)
            if path.is_file():
                with np.load(path, allow_pickle=False) as data:
                    if data["keys"].tolist() == image_set.keys[start : start + _CHUNK]:
                        done[(image_set.name, index)] = (data["features"], data["phash"])
                        continue
            todo.append((image_set, index, start))

    def prepare(job: tuple[ImageSet, int, int]) -> tuple[torch.Tensor, np.ndarray]:
        image_set, _, start = job
        return _prepare(loaded, image_set.files[start : start + _CHUNK])

    workers = max(1, workers)
    copies: queue.SimpleQueue[list[torch.nn.Module]] = queue.SimpleQueue()
    for copy in [members, *(deepcopy(members) for _ in range(workers - 1))]:
        copies.put(copy)

    def forward(batch: torch.Tensor, which: tuple[int, ...]) -> np.ndarray:
        own = copies.get()
        try:
            return np.stack([network_features(own[m], batch) for m in which], axis=1)
        finally:
            copies.put(own)

    with ThreadPoolExecutor(max_workers=1) as loader, ThreadPoolExecutor(max_workers=workers) as runner:
        pending = loader.submit(prepare, todo[0]) if prefetch and todo else None
        for position, job in enumerate(tqdm(todo, desc="embedding", unit="chunk")):
            image_set, index, start = job
            if pending is not None:
                batch, bits = pending.result()
                pending = loader.submit(prepare, todo[position + 1]) if position + 1 < len(todo) else None
            else:
                batch, bits = prepare(job)
            batches = [batch[i : i + batch_size] for i in range(0, len(batch), batch_size)]
            chunk = np.concatenate(list(runner.map(forward, batches, [image_set.members] * len(batches))))
            chunk = chunk.astype(np.float16)
            path = _chunk_path(cache, image_set.name, index)
            keys = image_set.keys[start : start + _CHUNK]
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")  # two runs never share a temporary
            np.savez(tmp, keys=np.array(keys), features=chunk, phash=bits)
            tmp.replace(path)
            done[(image_set.name, index)] = (chunk, bits)
    out: dict[str, dict[str, np.ndarray]] = {}
    for image_set in image_sets:
        parts = [done[(image_set.name, i)] for i in range(len(range(0, len(image_set.keys), _CHUNK)))]
        out[image_set.name] = {
            "keys": np.array(image_set.keys),
            "features": np.concatenate([f for f, _ in parts]),
            "phash": np.concatenate([b for _, b in parts]),
        }
    return out


def image_sets(
    loaded: LoadedModel, mura_root: Path | None, atlas_root: Path | None, atlas_files: set[str] | None = None
) -> tuple[list[ImageSet], pd.DataFrame]:
    """What to embed, and by which members, with one row per image (dataset, key, fold).

    The images are those of the model's cached predictions (train holdout, valid, FracAtlas), so
    every point on the map has a probability; a dataset whose folder is not given is left out, and
    ``atlas_files`` (when given) keeps only those FracAtlas files.
    """
    from core.data import fracatlas, mura

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
            raise SystemExit(
                f"error: {loaded.name} is not a {folds}-fold cross-validation ensemble of {members} "
                "members, so its train/ features cannot be out of fold"
            )
        train["fold"] = train_folds(train, folds, int(recipe.get("split_seed", 0)))
        holdout = set(pd.read_csv(files.resolve(files.holdout_predictions))["path"])
        train = train[train["path"].isin(holdout)]
        for fold in range(folds):
            part = train[train["fold"] == fold]
            sets.append(
                ImageSet(
                    f"mura_train_f{fold}",
                    part["path"].tolist(),
                    [mura.image_file(mura_root, p) for p in part["path"]],
                    (fold,),
                )
            )
            rows.append(pd.DataFrame({"dataset": "mura_train", "key": part["path"], "fold": fold}))
        valid = pd.read_csv(files.predictions("valid"))
        valid = valid[valid["study_type"].isin(_STUDY_TYPES)]
        sets.append(
            ImageSet(
                "mura_valid", valid["path"].tolist(), [mura.image_file(mura_root, p) for p in valid["path"]], everyone
            )
        )
        rows.append(pd.DataFrame({"dataset": "mura_valid", "key": valid["path"], "fold": -1}))
    if atlas_root is not None:
        atlas = pd.read_csv(files.predictions("fracatlas"))
        if atlas_files is not None:
            atlas = atlas[atlas["file"].isin(atlas_files)]
        sets.append(
            ImageSet(
                "fracatlas", atlas["file"].tolist(), [fracatlas.image_file(atlas_root, f) for f in atlas["file"]], (0,)
            )
        )
        rows.append(pd.DataFrame({"dataset": "fracatlas", "key": atlas["file"], "fold": -1}))
    return sets, pd.concat(rows, ignore_index=True)


@dataclass(frozen=True)
class Alignment:
    """Each member's features mapped into one shared space (member 0's principal axes)."""

    dimensions: int
    r2: dict[int, float]
    """Per member: share of the reference's variance its rotated features reproduce on the fitting images."""


def align_members(held_out: np.ndarray, dimensions: int = _PCA_DIMENSIONS) -> tuple[list, Alignment]:
    """Fit one map per member into member 0's principal space, on images no member saw.

    ``held_out`` is (N, members, D): every member's features of the same held-out images. Each
    member gets its own PCA to ``dimensions`` (its own coordinates), then an orthogonal Procrustes
    rotation (scipy) onto member 0's PCA coordinates: a rotation keeps distances, so a ``train/``
    image embedded by member k sits among its neighbours as member k sees them, and a ridge map
    (which shrinks towards the mean) would draw train points tighter than held-out ones.
    Returns per member a callable (D features -> shared coordinates) and the fit quality.
    """
    from scipy.linalg import orthogonal_procrustes
    from sklearn.decomposition import PCA

    dimensions = min(dimensions, held_out.shape[0], held_out.shape[2])
    data = held_out.astype(np.float32)
    pcas = [PCA(n_components=dimensions, random_state=0).fit(data[:, m]) for m in range(data.shape[1])]
    reference = pcas[0].transform(data[:, 0])
    maps, r2 = [], {}
    for member, pca in enumerate(pcas):
        own = pca.transform(data[:, member])
        rotation = np.eye(dimensions) if member == 0 else orthogonal_procrustes(own, reference)[0]
        residual = ((own @ rotation - reference) ** 2).sum()
        r2[member] = float(1 - residual / (reference**2).sum())
        maps.append(_Projector(pca, rotation.astype(np.float32)))
    return maps, Alignment(dimensions, r2)


@dataclass(frozen=True)
class _Projector:
    pca: PCA
    rotation: np.ndarray

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return self.pca.transform(features.astype(np.float32)) @ self.rotation


def combine_features(
    extracted: dict[str, dict[str, np.ndarray]], rows: pd.DataFrame, dimensions: int = _PCA_DIMENSIONS
) -> tuple[np.ndarray, np.ndarray, Alignment]:
    """(shared coordinates, raw out-of-fold features, alignment) for ``rows`` in their order.

    Every image's point comes from one member that never saw it: ``train/`` fold k from member k,
    ``valid/`` and FracAtlas from member 0 (the shared space's own member, so they need no rotation).
    The rotations are fitted on ``mura_valid``, which every member embedded.
    """
    maps, alignment = align_members(extracted["mura_valid"]["features"], dimensions)
    shared = np.zeros((len(rows), alignment.dimensions), np.float32)
    raw = np.zeros((len(rows), extracted["mura_valid"]["features"].shape[2]), np.float16)
    position = {(d, k): i for i, (d, k) in enumerate(zip(rows["dataset"], rows["key"], strict=True))}
    for name, part in extracted.items():
        member = int(name.rsplit("_f", 1)[1]) if name.startswith("mura_train_f") else 0
        dataset = "mura_train" if name.startswith("mura_train_f") else name
        where = np.array([position[(dataset, k)] for k in part["keys"].tolist()], dtype=int)
        own = part["features"][:, 0 if part["features"].shape[1] == 1 else member]
        shared[where] = maps[member](own)
        raw[where] = own
    return shared, raw, alignment


def project(features: np.ndarray, *, seed: int = 0, method: str = "umap") -> np.ndarray:
    """(N, 2) float32 map coordinates: UMAP (umap-learn, seeded, so reruns draw the same map) or PCA.

    PCA is the fast fallback (no numba compilation, a second for thousands of points) for tests and
    quick looks; UMAP keeps local neighbourhoods, which is what a map of "looks alike" should show.
    UMAP's neighbour graph is exact at every size (cosine, scikit-learn above umap-learn's own cut-over).
    """
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(features).astype(np.float32)
    if method != "umap":
        raise ValueError(f"unknown projection {method!r}; use umap or pca")
    import umap

    neighbours = min(15, len(features) - 1)
    known = (None, None, None)
    if len(features) >= _UMAP_EXACT_BELOW:
        # umap-learn finds exact neighbours itself below 4,096 points and switches to pynndescent's
        # approximate ones above; compiling pynndescent (numba) took 60 of UMAP's 90 CPU seconds on
        # ~4,800 points. scikit-learn's exact brute-force search takes about a second and agrees with
        # pynndescent on 99.8% of the neighbours there, so a large map keeps the small maps' exact graph.
        from sklearn.neighbors import NearestNeighbors

        index = NearestNeighbors(n_neighbors=neighbours, metric="cosine", algorithm="brute").fit(features)
        distances, indices = index.kneighbors(features)
        known = (indices, distances.astype(np.float32), None)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=neighbours,
        min_dist=0.1,
        metric="cosine",
        random_state=seed,
        n_jobs=1,
        precomputed_knn=known,
    )
    with warnings.catch_warnings():
        # without pynndescent's search index the reducer cannot place new points; the cache never asks it to
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        return reducer.fit_transform(features).astype(np.float32)


def study_table(rows: pd.DataFrame) -> pd.Series:
    """The study key of each image: a MURA image's study folder, a FracAtlas image itself (no studies)."""
    return rows["key"].where(rows["dataset"] == "fracatlas", rows["key"].str.rsplit("/", n=1).str[0] + "/")


def nearest_studies(
    features: np.ndarray, studies: pd.Series, k: int = NEIGHBOURS
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each study's ``k`` nearest other studies by cosine distance between mean view vectors.

    Returns the study keys (first-seen order), (S, k) int32 neighbour indices into them and (S, k)
    float32 cosine distances, from scikit-learn's exact NearestNeighbors (deterministic, no ties broken
    at random).
    """
    from sklearn.neighbors import NearestNeighbors

    codes, keys = pd.factorize(studies)
    sums = np.zeros((len(keys), features.shape[1]), np.float64)
    np.add.at(sums, codes, features)
    means = sums / np.bincount(codes)[:, None]
    k = min(k, len(keys) - 1)
    index = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(means)
    distances, neighbours = index.kneighbors(means)
    # A study is its own nearest neighbour unless a copy ties with it: drop itself wherever it sits.
    keep = neighbours != np.arange(len(keys))[:, None]
    neighbours = np.array([row[mask][:k] for row, mask in zip(neighbours, keep, strict=True)], dtype=np.int32)
    distances = np.array([row[mask][:k] for row, mask in zip(distances, keep, strict=True)], dtype=np.float32)
    return list(keys), neighbours, distances


@dataclass(frozen=True)
class Embeddings:
    """The cached embedding of every image: what the Data map page and the similar-studies panels read.

    ``images`` has one row per image (``dataset``, ``key``, ``study``, ``fold``, ``x``/``y`` UMAP,
    ``pca_x``/``pca_y``); ``features`` the (N, d) float32 shared-space vectors; ``phash`` (N, 64) bits;
    ``studies`` the study keys that ``neighbours`` (S, k) index, with cosine ``distances``.
    """

    images: pd.DataFrame
    features: np.ndarray
    phash: np.ndarray
    studies: list[str]
    neighbours: np.ndarray
    distances: np.ndarray
    meta: dict

    def similar(self, study: str, k: int = NEIGHBOURS) -> pd.DataFrame:
        """The ``k`` studies nearest to ``study`` (key, dataset, cosine distance), nearest first; empty if unknown."""
        try:
            row = self.studies.index(study)
        except ValueError:
            return pd.DataFrame(columns=["study", "dataset", "distance"])
        keys = [self.studies[i] for i in self.neighbours[row, :k]]
        dataset = self.images.drop_duplicates("study").set_index("study")["dataset"]
        return pd.DataFrame(
            {
                "study": keys,
                "dataset": dataset.reindex(keys).to_numpy(),
                "distance": self.distances[row, :k].astype(float),
            }
        )


def save(embeddings: Embeddings, path: Path) -> None:
    """Write the cache as a compressed ``.npz`` of plain arrays (float16 vectors, no pickle), atomically."""
    images = embeddings.images
    atomic.save_npz(
        path,
        key=images["key"].to_numpy(str),
        dataset=images["dataset"].to_numpy(str),
        study=images["study"].to_numpy(str),
        fold=images["fold"].to_numpy(np.int8),
        umap=images[["x", "y"]].to_numpy(np.float32),
        pca=images[["pca_x", "pca_y"]].to_numpy(np.float32),
        features=embeddings.features.astype(np.float16),
        phash=np.packbits(embeddings.phash, axis=1),
        studies=np.array(embeddings.studies, dtype=str),
        neighbours=embeddings.neighbours.astype(np.int32),
        distances=embeddings.distances.astype(np.float16),
        meta=np.array(json.dumps(embeddings.meta)),
    )


def load(path: Path) -> Embeddings:
    """Read :func:`save`'s cache (never unpickles); raises OSError/ValueError/KeyError when unreadable."""
    with np.load(path, allow_pickle=False) as data:
        umap_xy, pca_xy = data["umap"].astype(float), data["pca"].astype(float)
        images = pd.DataFrame(
            {
                "dataset": data["dataset"],
                "key": data["key"],
                "study": data["study"],
                "fold": data["fold"].astype(int),
                "x": umap_xy[:, 0],
                "y": umap_xy[:, 1],
                "pca_x": pca_xy[:, 0],
                "pca_y": pca_xy[:, 1],
            }
        )
        return Embeddings(
            images,
            data["features"].astype(np.float32),
            np.unpackbits(data["phash"], axis=1)[:, :_HASH_BITS].astype(bool),
            data["studies"].tolist(),
            data["neighbours"],
            data["distances"].astype(np.float32),
            json.loads(str(data["meta"])),
        )


def build(
    extracted: dict[str, dict[str, np.ndarray]], rows: pd.DataFrame, *, method: str = "umap", seed: int = 0
) -> tuple[Embeddings, np.ndarray]:
    """Everything the cache holds, from extracted per-member features; also the raw out-of-fold features."""
    started = time.perf_counter()
    shared, raw, alignment = combine_features(extracted, rows)
    hashes = np.zeros((len(rows), _HASH_BITS), bool)
    position = {(d, k): i for i, (d, k) in enumerate(zip(rows["dataset"], rows["key"], strict=True))}
    for name, part in extracted.items():
        dataset = "mura_train" if name.startswith("mura_train_f") else name
        hashes[[position[(dataset, k)] for k in part["keys"].tolist()]] = part["phash"]
    images = rows[["dataset", "key", "fold"]].reset_index(drop=True).assign(study=study_table(rows).to_numpy())
    xy = project(shared, seed=seed, method=method)
    pca = project(shared, seed=seed, method="pca")
    images = images.assign(x=xy[:, 0], y=xy[:, 1], pca_x=pca[:, 0], pca_y=pca[:, 1])
    studies, neighbours, distances = nearest_studies(shared, images["study"])
    meta = {
        "projection": method,
        "seed": seed,
        "dimensions": alignment.dimensions,
        "alignment_r2": {str(k): round(v, 4) for k, v in alignment.r2.items()},
        "train": "out of fold: each train/ image embedded by the one member that did not train on it",
        "held_out": "valid/ and FracAtlas embedded by member 0",
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    return Embeddings(images, shared, hashes, studies, neighbours, distances, meta), raw


def _patients(images: pd.DataFrame) -> pd.Series:
    """MURA patient of each image (FracAtlas has none: missing)."""
    patient = images["key"].str.extract(r"/(patient\d+)/")[0]
    return patient.where(images["dataset"] != "fracatlas")


def label_issue_table(files: ModelArtifacts) -> pd.DataFrame:
    """cleanlab's study ranking on the cached out-of-fold train/ and valid/ predictions (those present)."""
    from core.datamap.audit import label_issues, study_predictions

    parts = []
    for dataset, path in (
        ("mura_train", files.resolve(files.holdout_predictions)),
        ("mura_valid", files.predictions("valid")),
    ):
        if not path.is_file():
            continue
        predictions = pd.read_csv(path)
        predictions = predictions[predictions["study_type"].isin(_STUDY_TYPES)]
        parts.append(label_issues(study_predictions(predictions)).assign(dataset=dataset))
    table = pd.concat(parts, ignore_index=True)
    return table.sort_values(["label_quality", "study_path"], kind="stable", ignore_index=True)


def write_cache(
    files: ModelArtifacts,
    embeddings: Embeddings,
    raw: np.ndarray,
    known_groups: pd.Series | None,
    *,
    extract_seconds: float | None = None,
) -> dict:
    """Audit labels and duplicates, then write every data-map file of the model folder; returns the summary.

    ``raw`` is the (N, D) out-of-fold penultimate features in ``embeddings.images`` order;
    ``known_groups`` FracAtlas's own copy groups (file -> first file), to measure the duplicate check.
    """
    from core.datamap.audit import audit_duplicates

    started = time.perf_counter()
    images = embeddings.images.assign(patient=_patients(embeddings.images))
    duplicates = audit_duplicates(images, embeddings.phash, embeddings.features, known_groups)
    issues = label_issue_table(files)
    meta = {
        **embeddings.meta,
        "audit_seconds": round(time.perf_counter() - started, 1),
        "images": {k: int(v) for k, v in images["dataset"].value_counts().items()},
    }
    if extract_seconds is not None:
        meta["extract_seconds"] = round(extract_seconds, 1)
    save(
        Embeddings(
            embeddings.images,
            embeddings.features,
            embeddings.phash,
            embeddings.studies,
            embeddings.neighbours,
            embeddings.distances,
            meta,
        ),
        files.embeddings,
    )
    atomic.save_npz(
        files.embedding_features,
        key=images["key"].to_numpy(str),
        dataset=images["dataset"].to_numpy(str),
        features=raw.astype(np.float16),
    )
    atomic.write_text(files.label_issues, issues.to_csv(index=False, float_format="%.6f"))
    atomic.write_text(files.duplicates, duplicates.groups.to_csv(index=False, float_format="%.4f"))
    summary = {
        "embeddings": meta,
        "duplicates": duplicates.summary,
        "label_issues": {d: int(part["label_issue"].sum()) for d, part in issues.groupby("dataset")},
        "studies_scored": {d: int(len(part)) for d, part in issues.groupby("dataset")},
    }
    atomic.write_text(files.data_audit, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


def _known_copies(files: ModelArtifacts, atlas_root: Path, keys: list[str], *, subset: bool) -> pd.Series:
    """FracAtlas's own copy groups (file -> first file of its copies) of the embedded images.

    core.evaluate already grouped every scored image (``duplicate_of``), so the whole set reuses
    that column instead of decoding every image again; a subset (``--fracatlas-files``) is regrouped
    on its own, since dropping images can split a chain of near-copies.
    """
    from core.data import fracatlas

    if not subset:
        predictions = pd.read_csv(files.predictions("fracatlas"), usecols=lambda c: c in ("file", "duplicate_of"))
        if "duplicate_of" in predictions.columns:
            return predictions.set_index("file")["duplicate_of"].reindex(keys)
    return pd.Series(fracatlas.duplicate_groups(atlas_root, keys), index=keys)


def build_data_map(
    model: str,
    mura_root: str | Path,
    fracatlas_root: str | Path,
    *,
    projection: str,
    seed: int,
    cache: Path,
    fracatlas_files: Path | None,
    workers: int,
) -> dict:
    """Extract, project, find neighbours, audit labels and duplicates, and write the model's data-map
    cache; returns its summary."""
    from core.data import fracatlas, mura
    from core.model.checkpoint import load_model
    from core.model.prediction import configure_threads

    configure_threads(1)  # parallel single-thread workers instead (see extract)
    loaded = load_model(model)
    files = ModelArtifacts(loaded.directory)
    atlas_root = fracatlas.resolve_root(fracatlas_root)
    atlas_files = set(fracatlas_files.read_text(encoding="utf-8").split()) if fracatlas_files else None
    sets, rows = image_sets(loaded, mura.resolve_root(mura_root), atlas_root, atlas_files)
    started = time.perf_counter()
    extracted = extract(loaded, sets, cache / loaded.name, workers=workers)
    extract_seconds = time.perf_counter() - started
    embeddings, raw = build(extracted, rows, method=projection, seed=seed)
    atlas_keys = embeddings.images.loc[embeddings.images["dataset"] == "fracatlas", "key"].tolist()
    known = _known_copies(files, atlas_root, atlas_keys, subset=atlas_files is not None)
    return write_cache(files, embeddings, raw, known, extract_seconds=extract_seconds)
