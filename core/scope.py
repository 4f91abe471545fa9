"""Scope: which body part a radiograph shows, and whether it looks like the radiographs the model knows.

The classifier was trained on MURA humerus and forearm radiographs only; anything else (a hand,
a knee, a phone photo) gets a number that means little. A small companion model on the
classifier's own pooled features answers two questions before any verdict is shown:

* **Which body part?** A multinomial logistic regression over five classes: ``humerus`` and
  ``forearm`` (MURA train), ``hand/wrist`` and ``shoulder`` (FracAtlas regions), ``other``
  (FracAtlas leg/hip). Only the first two are in the model's scope.
* **Is it a radiograph like those?** The Mahalanobis distance of the features (in a PCA space,
  Ledoit-Wolf covariance) to all training radiographs; above the 99th percentile of out-of-fold
  training distances the image is called unusual (photos, documents, drawings, other modalities).

The head is stored as plain arrays in an ``.npz`` read with ``allow_pickle=False`` (a pickled
scikit-learn object would run code on load); :class:`ScopeHead` applies them with the same
algebra scikit-learn uses (standardise, linear, softmax; project, quadratic form).

Fitting and its out-of-fold measurement: ``python -m core.scope --mura-root DIR --fracatlas-root DIR``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

if TYPE_CHECKING:
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

from core import atomic
from core.artifacts import ModelArtifacts, file_version
from core.models import DEFAULT_MODEL, LoadedModel, MeanProbabilityEnsemble
from core.predict import DEFAULT_BATCH_SIZE, model_inputs

__all__ = [
    "SCOPE_CLASSES",
    "IN_SCOPE_STUDY_TYPES",
    "ScopeAssessment",
    "ScopeHead",
    "ScopeHeadError",
    "image_features",
    "network_features",
    "fit_head",
    "load_head",
    "head_for",
    "assess_images",
    "study_scope",
    "main",
]

SCOPE_CLASSES = ("humerus", "forearm", "hand/wrist", "shoulder", "other")
#: Body parts the classifier was trained on, and the MURA study type whose threshold they use.
IN_SCOPE_STUDY_TYPES = {"humerus": "XR_HUMERUS", "forearm": "XR_FOREARM"}
#: Below this top-class probability the body part is reported as uncertain, not pre-selected.
CONFIDENT_PROBABILITY = 0.6
_PCA_COMPONENTS = 64
_TYPICAL_QUANTILE = 0.99
_C = 0.05  # L2 strength: chosen for stable out-of-fold recall on train/ (not tuned on valid/)


class ScopeHeadError(RuntimeError):
    """The scope head file is missing or unusable; the message names the file."""


def head_for(loaded: LoadedModel) -> ScopeHead | None:
    """The scope head fitted for ``loaded`` (``scope_head.npz`` in its folder), or None if it has none."""
    path = ModelArtifacts(loaded.directory).scope_head
    version = file_version(path)
    return _cached_head(str(path), version) if version else None


@functools.lru_cache(maxsize=8)
def _cached_head(path: str, version: int) -> ScopeHead:
    return load_head(Path(path))


def assess_images(loaded: LoadedModel, images: Sequence[np.ndarray]) -> list[ScopeAssessment] | None:
    """The scope of each image, or None when the model has no scope head."""
    head = head_for(loaded)
    return None if head is None else head.assess(image_features(loaded, images, source=head.feature_source))


def study_scope(scopes: Sequence[ScopeAssessment]) -> tuple[str | None, str | None]:
    """The study type the views suggest, and, when the study should not be judged, why not (one sentence).

    A study is not judged when any view is flagged out of scope. The suggestion (every view a
    confident humerus, or every view a confident forearm) is only a suggestion: measured on MURA's
    own wrist, hand, elbow and finger views, the head calls most of them forearm (see
    scope_metrics.json), so callers let the user choose the body part rather than adopting it.
    """
    flagged = [scope for scope in scopes if scope.out_of_scope]
    if flagged:
        return None, flagged[0].reason()
    types = {scope.study_type for scope in scopes}
    return (types.pop() if len(types) == 1 else None), None


FEATURE_SOURCES = ("model", "imagenet")


def _feature_network(loaded: LoadedModel, source: str = "model") -> nn.Module:
    """The network whose pooled features the head reads: the classifier itself (its first member for
    an ensemble), or the same architecture with its ImageNet weights (features not tuned to MURA)."""
    if source == "imagenet":
        return _imagenet_network(loaded.config.name)
    if source != "model":
        raise ScopeHeadError(f"unknown feature source {source!r}")
    model = loaded.model
    return model.members[0] if isinstance(model, MeanProbabilityEnsemble) else model


@functools.lru_cache(maxsize=2)
def _imagenet_network(arch: str) -> nn.Module:
    from core.models import create_model

    network = create_model(arch, pretrained=True).eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def _last_linear(network: nn.Module) -> nn.Linear:
    linears = [module for module in network.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ScopeHeadError("the model has no final linear layer to read features from")
    return linears[-1]


@torch.inference_mode()
def image_features(loaded: LoadedModel, images: Sequence[np.ndarray], *, source: str = "model",
                   batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """(N, D) float32 pooled features: the input of the final linear layer of the ``source`` network."""
    network = _feature_network(loaded, source)
    chunks = [network_features(network, model_inputs(loaded, images[start : start + batch_size]))
              for start in range(0, len(images), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


@torch.inference_mode()
def network_features(network: nn.Module, batch: torch.Tensor) -> np.ndarray:
    """(N, D) float32 input of ``network``'s final linear layer for a prepared batch (its penultimate
    features); core.embeddings runs each ensemble member through this on one shared batch."""
    captured: list[torch.Tensor] = []
    handle = _last_linear(network).register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach()))
    try:
        network(batch.to(next(network.parameters()).device))
    finally:
        handle.remove()
    return captured[0].float().cpu().numpy()


@dataclass(frozen=True)
class ScopeAssessment:
    """What the scope head says of one image."""

    probabilities: dict[str, float]
    distance: float
    """Mahalanobis distance to the training radiographs (larger = less like them)."""
    distance_threshold: float
    colour_image: bool = False
    """Set by callers that decoded the image: a visibly coloured image is not a radiograph."""

    @property
    def body_part(self) -> str:
        """The head's most probable class, confident or not."""
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def confident(self) -> bool:
        """Whether the top class is probable enough (CONFIDENT_PROBABILITY) to pre-select the body part."""
        return self.probabilities[self.body_part] >= CONFIDENT_PROBABILITY

    @property
    def typical(self) -> bool:
        """Close enough to the training radiographs for the body-part call to mean something."""
        return not self.colour_image and self.distance <= self.distance_threshold

    @property
    def study_type(self) -> str | None:
        """The MURA study type the image looks like, when it confidently looks like a trained body part."""
        if not self.typical or not self.confident:
            return None
        return IN_SCOPE_STUDY_TYPES.get(self.body_part)

    @property
    def out_of_scope(self) -> bool:
        """Flagged: a colour image, unlike the training radiographs, or confidently another body part."""
        return not self.typical or (self.confident and self.body_part not in IN_SCOPE_STUDY_TYPES)

    @property
    def in_scope(self) -> bool:
        """Not flagged out of scope (the classifier's output may be read; the body part is the user's call)."""
        return not self.out_of_scope

    def as_json(self) -> dict[str, object]:
        """The assessment, rounded and with its :meth:`reason`, for core.predict's JSON output."""
        return {"body_part": self.body_part, "in_scope": self.in_scope, "study_type": self.study_type,
                "typical": self.typical, "distance": round(self.distance, 3),
                "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()}, "reason": self.reason()}

    def reason(self) -> str:
        """One plain sentence saying why the image is (not) judged."""
        part = self.body_part
        share = self.probabilities[part]
        if self.colour_image:
            return "It is a colour image, not a radiograph: the model reads X-rays only."
        if not self.typical:
            return ("It does not look like the radiographs the model was trained on (far from all of them in the "
                    "model's feature space): perhaps not an X-ray, or an unusual one.")
        if not self.confident:
            return f"The body part is uncertain (most likely {part}, {share:.0%}): pick it yourself if you know it."
        if part in IN_SCOPE_STUDY_TYPES:
            return f"Looks like a {part} radiograph ({share:.0%}), which the model was trained on."
        looks = "a radiograph of a body part other than the arm" if part == "other" else f"a {part} radiograph"
        return f"Looks like {looks} ({share:.0%}); the model was trained on humerus and forearm radiographs only."


@dataclass(frozen=True)
class ScopeHead:
    """The fitted head as plain arrays (see the module docstring for why not a pickle)."""

    classes: tuple[str, ...]
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray
    location: np.ndarray
    precision: np.ndarray
    distance_threshold: float
    feature_source: str = "model"

    def _standardised(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.scaler_mean) / self.scaler_scale

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, classes) softmax of the linear scores, as LogisticRegression.predict_proba."""
        scores = self._standardised(features) @ self.coef.T + self.intercept
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance in the PCA space, as LedoitWolf.mahalanobis (square-rooted)."""
        centred = (self._standardised(features) - self.pca_mean) @ self.pca_components.T - self.location
        return np.sqrt(np.einsum("ij,jk,ik->i", centred, self.precision, centred))

    def assess(self, features: np.ndarray) -> list[ScopeAssessment]:
        """One assessment per row of pooled features: body-part probabilities and typicality."""
        probabilities, distances = self.probabilities(features), self.distances(features)
        return [
            ScopeAssessment({c: float(p) for c, p in zip(self.classes, row, strict=True)}, float(d),
                            self.distance_threshold)
            for row, d in zip(probabilities, distances, strict=True)
        ]

    def save(self, path: Path) -> None:
        """Write the head as float32 arrays in an ``.npz`` (no pickle), replacing ``path`` only when complete."""
        arrays = {name: getattr(self, name) for name in ("scaler_mean", "scaler_scale", "coef", "intercept",
                                                          "pca_mean", "pca_components", "location", "precision")}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, classes=np.array(self.classes), distance_threshold=self.distance_threshold,
                            feature_source=np.array(self.feature_source),
                            **{k: v.astype(np.float32) for k, v in arrays.items()})
        tmp.replace(path)


def load_head(path: Path) -> ScopeHead:
    """Read a head written by :meth:`ScopeHead.save`; never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {name: data[name].astype(np.float64) for name in (
                "scaler_mean", "scaler_scale", "coef", "intercept", "pca_mean", "pca_components", "location",
                "precision")}
            classes = tuple(str(c) for c in data["classes"])
            threshold = float(data["distance_threshold"])
            source = str(data["feature_source"]) if "feature_source" in data.files else "model"
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ScopeHeadError(f"The scope head {path.name} cannot be read ({type(exc).__name__}).") from exc
    if classes != SCOPE_CLASSES or fields["coef"].shape[0] != len(classes):
        raise ScopeHeadError(f"The scope head {path.name} does not hold the expected classes.")
    if source not in FEATURE_SOURCES:
        raise ScopeHeadError(f"The scope head {path.name} reads an unknown feature source.")
    return ScopeHead(classes, distance_threshold=threshold, feature_source=source, **fields)


def _fit_parts(features: np.ndarray, labels: np.ndarray) -> tuple[StandardScaler, LogisticRegression, PCA, LedoitWolf]:
    # scikit-learn is imported only to fit: reading a head (every prediction) does not pay its import.
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    standardised = scaler.transform(features)
    classifier = LogisticRegression(C=_C, class_weight="balanced", max_iter=3000).fit(standardised, labels)
    pca = PCA(n_components=min(_PCA_COMPONENTS, *standardised.shape), random_state=0).fit(standardised)
    covariance = LedoitWolf().fit(pca.transform(standardised))
    return scaler, classifier, pca, covariance


def _as_head(parts: tuple[StandardScaler, LogisticRegression, PCA, LedoitWolf], threshold: float,
             source: str = "model") -> ScopeHead:
    scaler, classifier, pca, covariance = parts
    order = [list(classifier.classes_).index(c) for c in range(len(SCOPE_CLASSES))]
    return ScopeHead(SCOPE_CLASSES, scaler.mean_, scaler.scale_, classifier.coef_[order], classifier.intercept_[order],
                     pca.mean_, pca.components_, covariance.location_, covariance.precision_, threshold, source)


def fit_head(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, *,
             n_splits: int = 5, seed: int = 0, source: str = "model") -> tuple[ScopeHead, np.ndarray, np.ndarray]:
    """Fit on everything; return it with out-of-fold probabilities and distances.

    ``labels`` index :data:`SCOPE_CLASSES`; ``groups`` keep a patient (MURA) or a duplicate group
    (FracAtlas) in one fold. The distance threshold is the 99th percentile of out-of-fold
    distances, so it is not fitted to the very images that set it.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if set(np.unique(labels)) != set(range(len(SCOPE_CLASSES))):
        raise ValueError("every scope class needs training images")
    oof_probabilities = np.zeros((len(labels), len(SCOPE_CLASSES)))
    oof_distances = np.zeros(len(labels))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train_index, test_index in folds.split(features, labels, groups):
        fold_head = _as_head(_fit_parts(features[train_index], labels[train_index]), threshold=np.inf)
        oof_probabilities[test_index] = fold_head.probabilities(features[test_index])
        oof_distances[test_index] = fold_head.distances(features[test_index])
    threshold = float(np.quantile(oof_distances, _TYPICAL_QUANTILE))
    return _as_head(_fit_parts(features, labels), threshold, source), oof_probabilities, oof_distances


def _load_pixels(paths: Sequence[Path]) -> list[np.ndarray]:
    from core.imaging import load_radiograph

    return [load_radiograph(path).pixels for path in paths]


def _features_of(loaded: LoadedModel, paths: Sequence[Path], cache: Path | None, desc: str,
                 source: str = "model") -> np.ndarray:
    """Features of image files, cached (features only, never pixels) in ``cache`` when given."""
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if data["paths"].tolist() == [str(p) for p in paths]:
                return data["features"]
    chunks = []
    step = 32
    for start in tqdm(range(0, len(paths), step), desc=desc, unit="batch"):
        chunks.append(image_features(loaded, _load_pixels(paths[start : start + step]), source=source))
    features = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, paths=np.array([str(p) for p in paths]), features=features)
    return features


def _non_radiograph_probes() -> dict[str, np.ndarray]:
    """Greyscale images that are not radiographs (two photographs bundled with scikit-learn, a text page,
    a bar chart, noise, a gradient, a blank page), to measure what the head makes of them."""
    from PIL import Image, ImageDraw
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    probes = {f"photo {i + 1} (scikit-learn sample)": photo.mean(axis=2).astype(np.uint8)
              for i, photo in enumerate(load_sample_images().images)}
    page = Image.new("L", (400, 520), 250)
    draw = ImageDraw.Draw(page)
    for line in range(24):
        draw.text((24, 20 + 20 * line), "Lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2, fill=20)
    probes["text page"] = np.asarray(page)
    chart = Image.new("L", (480, 360), 255)
    draw = ImageDraw.Draw(chart)
    for bar in range(8):
        draw.rectangle((30 + 55 * bar, 330 - 35 * (bar % 5 + 1), 70 + 55 * bar, 330), fill=60 + 20 * bar)
    probes["bar chart"] = np.asarray(chart)
    probes["noise"] = rng.integers(0, 256, (320, 320), dtype=np.uint8)
    probes["gradient"] = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (320, 1))
    probes["blank page"] = np.full((320, 320), 255, dtype=np.uint8)
    return probes


def _sample_per_class(table: pd.DataFrame, column: str, per_class: int) -> pd.DataFrame:
    """At most ``per_class`` rows of each value of ``column``, a seeded sample kept in file order."""
    sampled = table.groupby(column, group_keys=False).apply(
        lambda rows: rows.sample(n=min(per_class, len(rows)), random_state=0))
    return table.loc[sorted(sampled.index)].reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.scope``: fit the head, measure it out of fold, and write both to the model's folder."""
    parser = argparse.ArgumentParser(prog="python -m core.scope", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", required=True, help="the MURA-v1.1 folder (train/ fits; valid/ is measured)")
    parser.add_argument("--fracatlas-root", required=True, help="a FracAtlas folder (hand, shoulder, leg/hip)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--per-class", type=int, default=500,
                        help="at most this many training images per class (seeded sample): a linear head on "
                             "1280 features needs no more, and every image costs a forward")
    parser.add_argument("--features", choices=FEATURE_SOURCES, default="model",
                        help="model: the classifier's own pooled features; imagenet: the same architecture's "
                             "ImageNet features (not tuned to MURA's look)")
    parser.add_argument("--feature-cache", type=Path, default=Path("runs/scope_features"),
                        help="folder for cached features (no pixels), so a refit skips the forwards")
    args = parser.parse_args(argv)
    from core import fracatlas, mura
    from core.models import load_model
    from core.predict import configure_threads

    configure_threads()
    loaded = load_model(args.model)
    cache = args.feature_cache / loaded.name / args.features
    source = args.features
    mura_root = mura.resolve_root(args.mura_root)
    atlas_root = fracatlas.resolve_root(args.fracatlas_root)

    mura_train = mura.read_images(mura_root, "train")
    mura_train = mura_train[mura_train["study_type"].isin(["XR_HUMERUS", "XR_FOREARM"])]
    atlas = fracatlas.read_images(atlas_root)
    atlas_classes = {"hand": "hand/wrist", "shoulder": "shoulder", "leg/hip": "other"}
    atlas_train = atlas[atlas["region"].isin(list(atlas_classes))].reset_index(drop=True)
    mura_train = _sample_per_class(mura_train, "study_type", args.per_class)
    atlas_train = _sample_per_class(atlas_train, "region", args.per_class)

    train_features = np.concatenate([
        _features_of(loaded, [mura.image_file(mura_root, p) for p in mura_train["path"]], cache / "mura_train.npz",
                     "MURA train", source=source),
        _features_of(loaded, [fracatlas.image_file(atlas_root, f) for f in atlas_train["file"]],
                     cache / "fracatlas.npz", "FracAtlas", source=source),
    ])
    labels = np.array([SCOPE_CLASSES.index(t.removeprefix("XR_").lower()) for t in mura_train["study_type"]]
                      + [SCOPE_CLASSES.index(atlas_classes[r]) for r in atlas_train["region"]])
    atlas_groups = fracatlas.duplicate_groups(atlas_root, atlas_train["file"].tolist())
    groups = np.array([f"mura:{p}" for p in mura_train["patient"]] + [f"atlas:{g}" for g in atlas_groups])
    head, oof_probabilities, oof_distances = fit_head(train_features, labels, groups, source=source)

    valid = mura.read_images(mura_root, "valid")
    valid_features = _features_of(loaded, [mura.image_file(mura_root, p) for p in valid["path"]],
                                  cache / "mura_valid.npz", "MURA valid (measured only)", source=source)
    whole_arm = atlas[atlas["region"] == "hand+shoulder"].reset_index(drop=True)
    whole_arm_features = _features_of(loaded, [fracatlas.image_file(atlas_root, f) for f in whole_arm["file"]],
                                      cache / "fracatlas_whole_arm.npz", "FracAtlas whole arm", source=source)
    metrics = _measure(head, labels, oof_probabilities, oof_distances, valid, valid_features,
                       atlas_train, whole_arm_features)
    probes = _non_radiograph_probes()
    probe_features = image_features(loaded, list(probes.values()), source=source)
    probe_calls = _called(head, head.probabilities(probe_features), head.distances(probe_features))
    metrics["non_radiograph_probes"] = dict(zip(probes, probe_calls, strict=True))
    metrics["summary"]["non_radiograph_probes_called_in_scope"] = int(
        sum(call in IN_SCOPE_STUDY_TYPES for call in probe_calls))
    metrics["fitted_on"] = {"features": source, "mura_train_images": int(len(mura_train)),
                            "fracatlas_images": int(len(atlas_train)),
                            "fracatlas_duplicate_groups_merged": int(len(atlas_groups) - len(set(atlas_groups)))}
    files = ModelArtifacts(loaded.directory)
    head.save(files.scope_head)
    atomic.write_text(files.scope_metrics, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    print(json.dumps(metrics["summary"], indent=2))
    print(f"wrote {files.scope_head} and {files.scope_metrics}")
    return 0


def _called(head: ScopeHead, probabilities: np.ndarray, distances: np.ndarray) -> list[str]:
    """What the app would do with each image: an in-scope study type, or why not."""
    calls = []
    for row, distance in zip(probabilities, distances, strict=True):
        assessment = ScopeAssessment(dict(zip(SCOPE_CLASSES, row.tolist(), strict=True)), float(distance),
                                     head.distance_threshold)
        if not assessment.typical:
            calls.append("unusual")
        elif not assessment.confident:
            calls.append("uncertain")
        else:
            calls.append(assessment.body_part)
    return calls


def _counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    return {str(t): {str(k): int(v) for k, v in row.items()} for t, row in table.iterrows()}


def _measure(head: ScopeHead, labels: np.ndarray, oof_probabilities: np.ndarray, oof_distances: np.ndarray,
             valid: pd.DataFrame, valid_features: np.ndarray, atlas_train: pd.DataFrame,
             whole_arm_features: np.ndarray) -> dict:
    truth = [SCOPE_CLASSES[i] for i in labels]
    oof_calls = _called(head, oof_probabilities, oof_distances)
    oof_table = pd.crosstab(pd.Series(truth, name="truth"), pd.Series(oof_calls, name="call"))
    valid_calls = _called(head, head.probabilities(valid_features), head.distances(valid_features))
    valid_table = pd.crosstab(valid["study_type"].rename("truth"), pd.Series(valid_calls, name="call"))
    atlas_calls = oof_calls[len(truth) - len(atlas_train):]
    hand_as_forearm = [file for file, region, call in zip(atlas_train["file"], atlas_train["region"], atlas_calls,
                                                          strict=True) if region == "hand" and call == "forearm"]
    in_scope = {"XR_HUMERUS", "XR_FOREARM"}
    other_parts = ~valid["study_type"].isin(in_scope).to_numpy()
    valid_in_scope_calls = np.isin(valid_calls, list(IN_SCOPE_STUDY_TYPES))
    correct_in_scope = np.array([call == t.removeprefix("XR_").lower() for call, t in
                                 zip(valid_calls, valid["study_type"], strict=True)])
    whole_arm_calls = _called(head, head.probabilities(whole_arm_features), head.distances(whole_arm_features))
    summary = {
        "out_of_fold_recall": {
            c: float(np.mean([call == c for call, t in zip(oof_calls, truth, strict=True) if t == c]))
            for c in SCOPE_CLASSES
        },
        "out_of_fold_unusual_share": float(np.mean([call == "unusual" for call in oof_calls])),
        "mura_valid_humerus_forearm_called_right": float(correct_in_scope[~other_parts].mean()),
        "mura_valid_other_parts_called_in_scope": int(valid_in_scope_calls[other_parts].sum()),
        "mura_valid_other_parts": int(other_parts.sum()),
        "fracatlas_hand_called_forearm_out_of_fold": int(len(hand_as_forearm)),
        "fracatlas_hand_images": int((atlas_train["region"] == "hand").sum()),
    }
    return {
        "summary": summary,
        "distance_threshold": head.distance_threshold,
        "out_of_fold_calls": _counts(oof_table),
        "mura_valid_calls": _counts(valid_table),
        "fracatlas_whole_arm_calls": {k: int(v) for k, v in pd.Series(whole_arm_calls).value_counts().items()},
        "fracatlas_hand_called_forearm": hand_as_forearm,
        "mura_valid_other_part_views": [
            {"path": p, "study_type": t, "call": c}
            for p, t, c, other in zip(valid["path"], valid["study_type"], valid_calls, other_parts, strict=True)
            if other
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
