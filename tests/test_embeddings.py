"""core.embeddings and core.datamap.audit on seeded synthetic sets: projections and neighbours are
deterministic, member alignment undoes a planted rotation, cleanlab finds a planted label flip and
the duplicate audit finds planted copies (and nothing else)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from core.datamap import audit as data_audit
from core.datamap import embeddings


def _clusters(seed: int = 0, per_cluster: int = 30, dimensions: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian clusters, non-negative like pooled ReLU features."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 4, (3, dimensions))
    labels = np.repeat(np.arange(3), per_cluster)
    return np.abs(centres[labels] + rng.normal(0, 0.3, (len(labels), dimensions))).astype(np.float32), labels


@pytest.mark.parametrize("method", ["pca", pytest.param("umap", marks=pytest.mark.slow)])  # UMAP compiles with numba
def test_projection_is_deterministic_and_keeps_clusters_apart(method: str) -> None:
    features, labels = _clusters()
    first = embeddings.project(features, seed=3, method=method)
    second = embeddings.project(features, seed=3, method=method)
    assert first.shape == (len(features), 2) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    centres = np.stack([first[labels == c].mean(axis=0) for c in range(3)])
    spread = max(np.linalg.norm(first[labels == c] - centres[c], axis=1).mean() for c in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * spread


def test_unknown_projection_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown projection"):
        embeddings.project(np.zeros((5, 3)), method="tsne")


def test_nearest_studies_are_deterministic_within_cluster_and_never_the_study_itself() -> None:
    features, labels = _clusters(per_cluster=12)
    studies = pd.Series([f"s{i // 2}" for i in range(len(features))])  # two views per study
    keys, neighbours, distances = embeddings.nearest_studies(features, studies, k=4)
    again = embeddings.nearest_studies(features, studies, k=4)
    np.testing.assert_array_equal(neighbours, again[1])
    assert keys == [f"s{i}" for i in range(len(features) // 2)]
    study_label = labels[::2]
    assert (neighbours != np.arange(len(keys))[:, None]).all()
    assert (study_label[neighbours] == study_label[:, None]).all()
    assert (np.diff(distances, axis=1) >= -1e-6).all()


def test_alignment_undoes_a_planted_rotation() -> None:
    features, _ = _clusters(per_cluster=40, dimensions=16)
    rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(16, 16)))
    held_out = np.stack([features, features @ rotation], axis=1)
    maps, alignment = embeddings.align_members(held_out, dimensions=8)
    assert alignment.r2[1] > 0.999
    np.testing.assert_allclose(maps[1](features @ rotation), maps[0](features), atol=1e-3)


def test_combined_features_take_train_from_its_own_member_and_held_out_from_member_zero() -> None:
    features, _ = _clusters(per_cluster=20, dimensions=12)
    rotation, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(12, 12)))
    train = features[:10] @ rotation  # fold 1's images, as member 1 (rotated) sees them
    extracted = {
        "mura_valid": {
            "keys": np.array([f"v{i}" for i in range(60)]),
            "features": np.stack([features, features @ rotation], axis=1),
        },
        "mura_train_f1": {"keys": np.array([f"t{i}" for i in range(10)]), "features": train[:, None]},
    }
    rows = pd.DataFrame(
        {
            "dataset": ["mura_train"] * 10 + ["mura_valid"] * 60,
            "key": [f"t{i}" for i in range(10)] + [f"v{i}" for i in range(60)],
        }
    )
    shared, raw, _ = embeddings.combine_features(extracted, rows, dimensions=6)
    np.testing.assert_allclose(shared[:10], shared[10:20], atol=1e-2)  # the same images, one space
    np.testing.assert_allclose(raw[:10], train, atol=1e-2)


def test_cleanlab_finds_a_planted_label_flip() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 60)
    probability = np.where(labels == 1, rng.uniform(0.6, 0.95, 120), rng.uniform(0.05, 0.4, 120))
    labels[7] = 1  # planted: labelled abnormal, the model is sure it is normal
    probability[7] = 0.02
    studies = pd.DataFrame(
        {
            "study_path": [f"s{i}/" for i in range(120)],
            "study_type": "XR_HUMERUS",
            "label": labels,
            "probability": probability,
        }
    )
    ranked = data_audit.label_issues(studies)
    assert ranked.iloc[0]["study_path"] == "s7/"
    assert bool(ranked.iloc[0]["label_issue"])
    assert ranked["label_issue"].sum() <= 3  # clean studies are not flooded into the queue
    assert ranked["label_quality"].is_monotonic_increasing


def test_study_predictions_average_views() -> None:
    views = pd.DataFrame(
        {
            "path": ["a/1", "a/2", "b/1"],
            "study_path": ["a/", "a/", "b/"],
            "study_type": "XR_FOREARM",
            "patient": ["p1", "p1", "p2"],
            "label": [1, 1, 0],
            "probability": [0.2, 0.6, 0.3],
        }
    )
    studies = data_audit.study_predictions(views).set_index("study_path")
    assert studies.loc["a/", "probability"] == pytest.approx(0.4)
    assert studies.loc["a/", "views"] == 2


def test_duplicate_audit_finds_planted_copies_and_a_leak() -> None:
    rng = np.random.default_rng(4)
    n = 40
    phash = rng.integers(0, 2, (n, 64)).astype(bool)
    features = rng.normal(size=(n, 16)).astype(np.float32)
    phash[5] = phash[3]
    phash[5, :2] = ~phash[5, :2]  # a re-encoded copy: two bits differ
    features[25] = features[10] * 1.01  # the same radiograph in valid/: found by embedding only
    images = pd.DataFrame(
        {
            "dataset": ["mura_train"] * 20 + ["mura_valid"] * 10 + ["fracatlas"] * 10,
            "key": [f"k{i}" for i in range(n)],
            "study": [f"s{i}" for i in range(n)],
            "patient": [f"p{i}" for i in range(30)] + [None] * 10,
        }
    )
    audit = data_audit.audit_duplicates(images, phash, features)
    groups = audit.groups.groupby("group")["key"].apply(set).tolist()
    assert sorted(groups, key=min) == [{"k10", "k25"}, {"k3", "k5"}]
    scope = audit.groups.drop_duplicates("group").set_index("scope")
    assert set(scope.index) == {"within mura_train", "train-valid leak"}
    assert audit.summary["pairs_by_method"] == {"hash": 1, "embedding": 1}
    assert audit.summary["mura_groups_across_patients"] == 2
    assert audit.summary["train_valid_shared_patients"] == 0


def test_duplicate_audit_counts_recovered_known_groups() -> None:
    phash = np.zeros((4, 64), bool)
    phash[2:, :32] = True
    phash[3, 40:] = True  # far from its known copy: not recovered
    features = np.eye(4, dtype=np.float32)
    images = pd.DataFrame(
        {"dataset": "fracatlas", "key": ["a", "b", "c", "d"], "study": ["a", "b", "c", "d"], "patient": [None] * 4}
    )
    known = pd.Series(["a", "a", "c", "c"], index=["a", "b", "c", "d"])
    audit = data_audit.audit_duplicates(images, phash, features, known)
    assert audit.summary["fracatlas_known"] == {"groups": 2, "images": 4, "recovered": 1}


def test_cache_round_trip_keeps_everything(tmp_path) -> None:
    features, _ = _clusters(per_cluster=6)
    images = pd.DataFrame(
        {"dataset": "mura_valid", "key": [f"s{i // 2}/image{i % 2}.png" for i in range(18)], "fold": -1}
    )
    images["study"] = embeddings.study_table(images)
    xy = embeddings.project(features, method="pca")
    images = images.assign(x=xy[:, 0], y=xy[:, 1], pca_x=xy[:, 0], pca_y=xy[:, 1])
    studies, neighbours, distances = embeddings.nearest_studies(features, images["study"], k=3)
    phash = np.random.default_rng(0).integers(0, 2, (18, 64)).astype(bool)
    cache = embeddings.Embeddings(images, features, phash, studies, neighbours, distances, {"seed": 0})
    other = tmp_path / "embeddings.npz.tmp.npz"  # another writer's temporary file: never taken over
    other.write_bytes(b"half written")
    embeddings.save(cache, tmp_path / "embeddings.npz")
    assert other.read_bytes() == b"half written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddings.npz", other.name]
    back = embeddings.load(tmp_path / "embeddings.npz")
    assert back.studies == studies and back.meta == {"seed": 0}
    np.testing.assert_array_equal(back.phash, phash)
    np.testing.assert_array_equal(back.neighbours, neighbours)
    pd.testing.assert_frame_equal(back.images[images.columns], images, check_dtype=False, atol=1e-6)
    similar = back.similar(studies[0], k=2)
    assert similar["study"].tolist() == [studies[i] for i in neighbours[0, :2]]
    assert back.similar("unknown/").empty


def test_training_split_keeps_patients_with_copies_together() -> None:
    from core.data.splits import patient_split, split_groups

    images = pd.DataFrame(
        {"path": [f"p{i}/image1.png" for i in range(40)], "patient": [f"p{i:02d}" for i in range(40)]}
    )
    duplicates = pd.DataFrame(
        {
            "group": [0, 0, 1, 1, 1],
            "key": ["p3/image1.png", "p30/image1.png", "p7/image1.png", "p8/image1.png", "elsewhere.png"],
        }
    )
    groups = split_groups(images, duplicates)
    assert groups.nunique() == 38
    assert (split_groups(images) == images["patient"]).all()
    for fold in range(4):
        holdout = set(images["patient"].iloc[patient_split(images, 0, 0, folds=4, fold=fold, groups=groups)[1]])
        assert ("p03" in holdout) == ("p30" in holdout) and ("p07" in holdout) == ("p08" in holdout)
    plain = [patient_split(images, 0, 0, folds=4, fold=f)[1].tolist() for f in range(4)]
    assert plain == [
        patient_split(images, 0, 0, folds=4, fold=f, groups=split_groups(images, duplicates.iloc[:0]))[1].tolist()
        for f in range(4)
    ]


def _tiny_ensemble(members: int = 2) -> SimpleNamespace:
    """A LoadedModel stand-in: seeded two-layer members (pooled conv features, then one linear)."""
    from core.model.registry import MeanProbabilityEnsemble

    torch.manual_seed(0)
    nets = [
        nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 1)).eval()
        for _ in range(members)
    ]
    config = SimpleNamespace(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return SimpleNamespace(model=MeanProbabilityEnsemble(nets), input_size=32, config=config)


def test_extract_is_the_same_with_parallel_workers_and_resumes_from_its_chunks(tmp_path, monkeypatch) -> None:
    from tests.synthetic import synthetic_radiograph_png

    monkeypatch.setattr(embeddings, "_CHUNK", 4)
    files = []
    for seed in range(10):
        files.append(tmp_path / f"image{seed}.png")
        files[-1].write_bytes(synthetic_radiograph_png(seed, size=48 + 4 * seed))
    sets = [
        embeddings.ImageSet("mura_valid", [f"k{i}" for i in range(7)], files[:7], (0, 1)),
        embeddings.ImageSet("fracatlas", [f"f{i}" for i in range(3)], files[7:], (0,)),
    ]
    loaded = _tiny_ensemble()
    one = embeddings.extract(loaded, sets, tmp_path / "one", batch_size=2, workers=1, prefetch=False)
    two = embeddings.extract(loaded, sets, tmp_path / "two", batch_size=2, workers=2)
    for name in ("mura_valid", "fracatlas"):
        np.testing.assert_array_equal(one[name]["features"], two[name]["features"])
        np.testing.assert_array_equal(one[name]["phash"], two[name]["phash"])
    assert one["mura_valid"]["features"].shape == (7, 2, 6) and one["fracatlas"]["phash"].shape == (3, 64)
    assert not np.array_equal(one["mura_valid"]["features"][:, 0], one["mura_valid"]["features"][:, 1])

    def refuse(*_args, **_kwargs):
        raise AssertionError("a cached chunk was decoded again")

    monkeypatch.setattr(embeddings, "_prepare", refuse)
    again = embeddings.extract(loaded, sets, tmp_path / "two", batch_size=2, workers=2)
    np.testing.assert_array_equal(again["mura_valid"]["features"], two["mura_valid"]["features"])


@pytest.mark.slow  # a large map, twice
def test_large_maps_use_exact_neighbours_and_stay_deterministic(monkeypatch) -> None:
    """Above umap-learn's cut-over the neighbour graph comes from scikit-learn (exact), not pynndescent."""
    features, labels = _clusters()

    def refuse(*_args, **_kwargs):
        raise AssertionError("pynndescent was asked for neighbours")

    monkeypatch.setattr(embeddings, "_UMAP_EXACT_BELOW", 50)
    monkeypatch.setattr("umap.umap_.nearest_neighbors", refuse)
    first = embeddings.project(features, seed=3)
    np.testing.assert_array_equal(first, embeddings.project(features, seed=3))
    centres = np.stack([first[labels == c].mean(axis=0) for c in range(3)])
    spread = max(np.linalg.norm(first[labels == c] - centres[c], axis=1).mean() for c in range(3))
    assert min(np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)) > 2 * spread
