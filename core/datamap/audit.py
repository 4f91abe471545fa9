"""Is it the model or the data? Label issues (cleanlab) and near-duplicate / leakage checks.

* **Label issues**: cleanlab's confident learning on the model's *out-of-sample* probabilities
  (out-of-fold on ``train/``, the untouched ``valid/``), at study level because MURA labels whole
  studies. A study ranks high when the model, which never saw it, confidently disagrees with its
  label: a reviewer's queue, not a verdict (the model may be the one that is wrong).
* **Duplicates**: pairs of images whose 64-bit perceptual hashes differ in few bits, or whose
  embeddings are nearly parallel; pairs are joined into groups (connected components), and each
  group says whether it stays in one split, crosses ``train/``-``valid/`` (leakage) or crosses
  datasets. MURA patients shared by ``train/`` and ``valid/`` are counted too.

``python -m core.embeddings`` writes both tables next to the model's embeddings; the dashboard only
reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "PHASH_BITS",
    "EMBEDDING_COSINE",
    "study_predictions",
    "label_issues",
    "duplicate_pairs",
    "duplicate_groups",
    "DuplicateAudit",
    "audit_duplicates",
]

#: Perceptual-hash pairs at most this many of 64 bits apart are called near-duplicates, and embedding
#: pairs at least this cosine-similar. Calibrated on the shipped cache against pixel copies (64x64
#: thumbnail RMS < 0.03) among all pairs within 8 bits or cosine 0.99: radiographs share so much
#: structure that 6 bits already pairs 134 images for 16 copies; 2 bits pairs 20 (16 copies) and cosine
#: 0.999 pairs 15 (all copies), together 17 of the 17 copies found.
PHASH_BITS = 2
EMBEDDING_COSINE = 0.999


def study_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per MURA study: label, mean view probability (the study verdict), views and patient."""
    return (
        predictions.groupby("study_path", sort=False)
        .agg(
            study_type=("study_type", "first"),
            patient=("patient", "first"),
            label=("label", "first"),
            probability=("probability", "mean"),
            views=("path", "size"),
        )
        .reset_index()
    )


def label_issues(studies: pd.DataFrame) -> pd.DataFrame:
    """``studies`` ranked by cleanlab's label quality (lowest first), with ``label_issue`` flagged.

    ``label_quality`` is cleanlab.rank's self-confidence score (the out-of-sample probability of the
    given label); ``label_issue`` is cleanlab.filter.find_label_issues (confident learning, pruning by
    the estimated noise rate). Each study type is scored on its own, since thresholds and error rates
    differ by body part.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    parts = []
    for _, part in studies.groupby("study_type", sort=False):
        labels = part["label"].to_numpy(int)
        p = np.clip(part["probability"].to_numpy(float), 1e-6, 1 - 1e-6)
        pred_probs = np.column_stack([1 - p, p])
        issue = find_label_issues(labels, pred_probs) if len(np.unique(labels)) == 2 else np.zeros(len(labels), bool)
        parts.append(part.assign(label_quality=get_label_quality_scores(labels, pred_probs), label_issue=issue))
    ranked = pd.concat(parts).sort_values(["label_quality", "study_path"], kind="stable")
    return ranked.reset_index(drop=True)


def duplicate_pairs(
    phash: np.ndarray, features: np.ndarray, *, phash_bits: int = PHASH_BITS, cosine: float = EMBEDDING_COSINE
) -> pd.DataFrame:
    """Index pairs (i < j) of near-duplicate images, with how each pair was found and its distances.

    ``phash`` is (N, 64) bits, ``features`` (N, d) embeddings. scikit-learn's radius neighbours (Hamming
    metric on the bits, cosine on the features) find every pair without an N^2 Python loop.
    """
    from sklearn.neighbors import NearestNeighbors

    found: dict[tuple[int, int], dict] = {}
    hash_index = NearestNeighbors(metric="hamming", algorithm="brute").fit(phash.astype(bool))
    distances, neighbours = hash_index.radius_neighbors(phash.astype(bool), radius=phash_bits / phash.shape[1] + 1e-9)
    for i, (dist, near) in enumerate(zip(distances, neighbours, strict=True)):
        for d, j in zip(dist, near, strict=True):
            if i < j:
                found[(i, int(j))] = {"phash_bits": int(round(d * phash.shape[1]))}
    feature_index = NearestNeighbors(metric="cosine", algorithm="brute").fit(features)
    distances, neighbours = feature_index.radius_neighbors(features, radius=1 - cosine)
    for i, (dist, near) in enumerate(zip(distances, neighbours, strict=True)):
        for d, j in zip(dist, near, strict=True):
            if i < j:
                found.setdefault((i, int(j)), {})["cosine"] = float(1 - d)
    rows = []
    for (i, j), found_by in sorted(found.items()):
        bits = found_by.get("phash_bits", int(np.count_nonzero(phash[i] != phash[j])))
        similarity = found_by.get("cosine", float(_cosine(features[i], features[j])))
        how = "both" if len(found_by) == 2 else ("hash" if "phash_bits" in found_by else "embedding")
        rows.append({"a": i, "b": j, "phash_bits": bits, "cosine": round(similarity, 4), "found_by": how})
    return pd.DataFrame(rows, columns=["a", "b", "phash_bits", "cosine", "found_by"])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def duplicate_groups(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Group id of each of ``n`` images: connected components of the pair graph (scipy), -1 when alone."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs)), (pairs["a"].to_numpy(int), pairs["b"].to_numpy(int))), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    grouped = sizes[component] > 1
    renumbered = np.full(n, -1)
    renumbered[grouped] = pd.factorize(component[grouped])[0]
    return renumbered


@dataclass(frozen=True)
class DuplicateAudit:
    """The near-duplicate groups (one row per image in a group) and the counts the page shows."""

    groups: pd.DataFrame
    summary: dict


def _scope(datasets: set[str]) -> str:
    if datasets == {"mura_train", "mura_valid"}:
        return "train-valid leak"
    if len(datasets) > 1:
        return "across datasets" if "fracatlas" in datasets else "across splits"
    return f"within {next(iter(datasets))}"


def audit_duplicates(
    images: pd.DataFrame, phash: np.ndarray, features: np.ndarray, known_groups: pd.Series | None = None
) -> DuplicateAudit:
    """Near-duplicate groups over ``images`` (columns ``dataset``, ``key``, ``study``, ``patient``) and counts.

    ``known_groups`` (FracAtlas file -> first file of its copies, from core.data.fracatlas.duplicate_groups)
    measures how many of the dataset's own duplicate groups the checks recover.
    """
    pairs = duplicate_pairs(phash, features)
    group = duplicate_groups(len(images), pairs)
    found_by: dict[int, set[str]] = {}
    for row in pairs.itertuples():
        found_by[row.a] = found_by[row.b] = found_by.get(row.a, set()) | {row.found_by}
    members = images.assign(group=group)[group >= 0].copy()
    scope = members.groupby("group")["dataset"].agg(lambda d: _scope(set(d)))
    members["scope"] = members["group"].map(scope)
    members["patients"] = members.groupby("group")["patient"].transform("nunique")
    members = members.sort_values(["group", "dataset", "key"]).reset_index(drop=True)
    mura = images[images["dataset"].str.startswith("mura")]
    shared_patients = set(mura.loc[mura["dataset"] == "mura_train", "patient"]) & set(
        mura.loc[mura["dataset"] == "mura_valid", "patient"]
    )
    per_group = members.drop_duplicates("group")
    summary = {
        "images": int(len(images)),
        "pairs": int(len(pairs)),
        "pairs_by_method": {str(k): int(v) for k, v in pairs["found_by"].value_counts().items()},
        "groups": int(per_group.shape[0]),
        "images_in_groups": int(len(members)),
        "groups_by_scope": {str(k): int(v) for k, v in per_group["scope"].value_counts().items()},
        "mura_groups_across_patients": int((per_group["patients"] > 1).sum()),
        "train_valid_shared_patients": len(shared_patients),
        "thresholds": {"phash_bits": PHASH_BITS, "cosine": EMBEDDING_COSINE},
    }
    if known_groups is not None:
        summary["fracatlas_known"] = _recovered(images, group, known_groups)
    return DuplicateAudit(members, summary)


def _recovered(images: pd.DataFrame, group: np.ndarray, known_groups: pd.Series) -> dict:
    """How many of FracAtlas's own duplicate groups (copies of one radiograph) land in one found group."""
    atlas = images.assign(group=group)[images["dataset"] == "fracatlas"].set_index("key")
    known = known_groups.reindex(atlas.index)
    sizes = known.value_counts()
    multi = sizes[sizes > 1].index
    recovered = sum(1 for first in multi if (g := atlas.loc[known == first, "group"]).min() >= 0 and g.nunique() == 1)
    return {"groups": int(len(multi)), "images": int(sizes[sizes > 1].sum()), "recovered": int(recovered)}
