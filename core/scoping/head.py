"""Scope: which body part a radiograph shows, and whether it looks like the radiographs the model knows.

The classifier was trained on MURA humerus and forearm radiographs only; anything else (a hand,
a knee, a phone photo) gets a number that means little. A small companion model on the
classifier's own pooled features answers two questions before any verdict is shown:

* **Which body part?** A multinomial logistic regression over six classes: ``humerus`` and
  ``forearm`` (MURA train), ``joint close-up`` (the two ends of the same MURA train radiographs:
  wrist, elbow or shoulder in MURA's own look, so that "MURA-looking" does not mean "in scope"),
  ``hand/wrist`` and ``shoulder`` (FracAtlas regions), ``other`` (FracAtlas leg/hip). Only the first
  two are in the model's scope.
* **Is it a radiograph like those?** The Mahalanobis distance of the features (in a PCA space,
  Ledoit-Wolf covariance) to all training radiographs; above the 99th percentile of out-of-fold
  training distances the image is called unusual (photos, documents, drawings, other modalities).

The head is stored as plain arrays in an ``.npz`` read with ``allow_pickle=False`` (a pickled
scikit-learn object would run code on load); :class:`ScopeHead` applies them with the same
algebra scikit-learn uses (standardise, linear, softmax; project, quadratic form).

Fitting and its out-of-fold measurement: ``python -m core.scope --mura-root DIR --fracatlas-root DIR``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.model.checkpoint import LoadedModel
from core.model.prediction import DEFAULT_BATCH_SIZE, model_inputs
from core.model.registry import MeanProbabilityEnsemble, final_linear_name
from core.store import atomic
from core.store.artifacts import ModelArtifacts, file_version

__all__ = [
    "SCOPE_CLASSES",
    "fracture_scope_reason",
    "JOINT_CLOSE_UP",
    "IN_SCOPE_STUDY_TYPES",
    "ScopeAssessment",
    "ScopeHead",
    "ScopeHeadError",
    "image_features",
    "network_features",
    "load_head",
    "head_for",
    "assess_images",
    "study_scope",
    "views_in_study_mean",
    "study_ambiguity",
    "SCOPE_TARGETS",
    "target_rows",
]

#: A close view of the end of an arm bone: what a wrist, elbow or shoulder radiograph shows, in MURA's own look
#: (core.scoping.fit makes these examples from end crops of MURA train/ radiographs).
JOINT_CLOSE_UP = "joint close-up"
SCOPE_CLASSES = ("humerus", "forearm", "hand/wrist", "shoulder", JOINT_CLOSE_UP, "other")
#: Body parts the classifier was trained on, and the MURA study type whose threshold they use.
IN_SCOPE_STUDY_TYPES = {"humerus": "XR_HUMERUS", "forearm": "XR_FOREARM"}
#: Below this top-class probability the body part is reported as uncertain, not pre-selected.
CONFIDENT_PROBABILITY = 0.6
#: ``scope_score`` at or above which an image is flagged out of scope (see ScopeAssessment.scope_score).
OUT_OF_SCOPE_SCORE = 0.5
#: The classes that are a joint end of the forearm (a wrist, an elbow, a hand): what a forearm call may really be.
JOINT_END_CLASSES = (JOINT_CLOSE_UP, "hand/wrist")
#: A forearm call is read as "forearm or wrist" when the joint-end classes get at least this share (declared
#: conservative rule, docs/experiments.md "Scope head: wrists that pass as forearm"): on MURA valid/, 3 of 4
#: wrist views are unflagged forearm calls at 78-88%, so the forearm share alone cannot tell them apart.
JOINT_END_SHARE = 0.02
FOREARM_OR_WRIST = "forearm or wrist"


class ScopeHeadError(RuntimeError):
    """The scope head file is missing or unusable; the message names the file."""


def head_for(loaded: LoadedModel) -> ScopeHead | None:
    """The scope head fitted for ``loaded`` (``scope_head.npz`` in its folder, else its base model's), or
    None if it has none."""
    files = ModelArtifacts(loaded.directory)
    path = files.resolve(files.scope_head)
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
    confident humerus, or every view a confident forearm) is adopted by callers only when the head's
    ``preselect`` flag says it met its rule on MURA valid/ (scope_metrics.json); otherwise the user
    chooses the body part.
    """
    flagged = [scope for scope in scopes if scope.out_of_scope]
    if flagged:
        return None, flagged[0].reason()
    types = {scope.study_type for scope in scopes}
    return (types.pop() if len(types) == 1 else None), None


def study_ambiguity(scopes: Sequence[ScopeAssessment]) -> str | None:
    """Why the head cannot name the study's body part although no view is flagged (a view that may be a
    wrist as well as a forearm), in one sentence; None when it can. Such a study gets no verdict until the
    user names the body part."""
    doubtful = [scope for scope in scopes if scope.forearm_or_wrist]
    return doubtful[0].reason() if doubtful else None


def views_in_study_mean(scopes: Sequence[ScopeAssessment]) -> list[int]:
    """Indices of the views whose probabilities make the study's: the ones not flagged out of scope.

    A flagged view (another body part, not a radiograph) would pull the study's mean towards a number
    the model cannot stand behind, so it leaves the mean and callers say so. When every view is
    flagged all of them stay: the study then gets no verdict unless the user names its body part, and
    that verdict is marked as given against the flag.
    """
    kept = [index for index, scope in enumerate(scopes) if not scope.out_of_scope]
    return kept or list(range(len(scopes)))


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
    from core.model.registry import create_model

    network = create_model(arch, pretrained=True).eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def _last_linear(network: nn.Module) -> nn.Linear:
    name = final_linear_name(network)
    if name is None:
        raise ScopeHeadError("the model has no final linear layer to read features from")
    layer = network.get_submodule(name)
    assert isinstance(layer, nn.Linear), "final_linear_name names a Linear layer"
    return layer


@torch.inference_mode()
def image_features(
    loaded: LoadedModel, images: Sequence[np.ndarray], *, source: str = "model", batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """(N, D) float32 pooled features: the input of the final linear layer of the ``source`` network."""
    network = _feature_network(loaded, source)
    chunks = [
        network_features(network, model_inputs(loaded, images[start : start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]
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


def fracture_scope_reason(scope: ScopeAssessment) -> str | None:
    """Why a fracture output should give this view no verdict (one phrase), or None when it may.

    The fracture output was trained on FracAtlas upper-limb radiographs (hand, wrist, forearm, elbow,
    shoulder, whole arm), so every body part the head knows but "other" is in its scope; a colour
    picture or an "other" view (leg, hip, not a radiograph) is not.
    """
    if scope.colour_image:
        return "it is a colour picture, not a radiograph"
    if scope.body_part == "other":
        return "the scope head sees no upper-limb radiograph in it (another body part, or not a radiograph)"
    return None


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
    def joint_end_share(self) -> float:
        """P(a joint end of the forearm: joint close-up or hand/wrist), the head's doubt about a forearm call."""
        return sum(self.probabilities.get(part, 0.0) for part in JOINT_END_CLASSES)

    @property
    def forearm_or_wrist(self) -> bool:
        """A forearm call the head cannot tell from a wrist (JOINT_END_SHARE): no suggestion, no verdict
        until the user names the body part."""
        return self.in_scope and self.body_part == "forearm" and self.joint_end_share >= JOINT_END_SHARE

    @property
    def study_type(self) -> str | None:
        """The MURA study type the image looks like, when it confidently looks like a trained body part
        (never for a forearm call that may be a wrist)."""
        if not self.typical or not self.confident or self.forearm_or_wrist:
            return None
        return IN_SCOPE_STUDY_TYPES.get(self.body_part)

    @property
    def scope_score(self) -> float:
        """How far out of scope (>= 0.5: flagged): the larger of P(neither humerus nor forearm) and
        distance / threshold - 0.5 (0.5 at the typicality threshold); a colour image scores at least 1.

        One number for ranking (the out-of-scope AUROC in scope_metrics.json is measured on it) and
        for the predict CLI's ``scope_score``.
        """
        outside = 1.0 - sum(self.probabilities.get(part, 0.0) for part in IN_SCOPE_STUDY_TYPES)
        score = max(outside, self.distance / self.distance_threshold - 0.5)
        return max(score, 1.0) if self.colour_image else score

    @property
    def out_of_scope(self) -> bool:
        """Flagged: a colour image, unlike the training radiographs, or more probably not humerus or forearm."""
        return self.scope_score >= OUT_OF_SCOPE_SCORE

    @property
    def in_scope(self) -> bool:
        """Not flagged out of scope (the classifier's output may be read; the body part is the user's call)."""
        return not self.out_of_scope

    def as_json(self) -> dict[str, object]:
        """The assessment, rounded and with its :meth:`reason`, for core.predict's JSON output."""
        return {
            "body_part": self.body_part,
            "out_of_scope": self.out_of_scope,
            "forearm_or_wrist": self.forearm_or_wrist,
            "joint_end_share": round(self.joint_end_share, 4),
            "scope_score": round(self.scope_score, 4),
            "in_scope": self.in_scope,
            "study_type": self.study_type,
            "typical": self.typical,
            "distance": round(self.distance, 3),
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
            "reason": self.reason(),
        }

    def reason(self) -> str:
        """One plain sentence saying why the image is (not) judged."""
        part = self.body_part
        share = self.probabilities[part]
        if self.colour_image:
            return "It is a colour image, not a radiograph: the model reads X-rays only."
        if not self.typical:
            return (
                "It does not look like the radiographs the model was trained on (far from all of them in the "
                "model's feature space): perhaps not an X-ray, or an unusual one."
            )
        if self.out_of_scope and not self.confident:
            return (
                f"Probably not a humerus or forearm radiograph ({self.scope_score:.0%}; most likely {part}, "
                f"{share:.0%}); the model was trained on humerus and forearm radiographs only."
            )
        if self.forearm_or_wrist:
            return (
                f"{FOREARM_OR_WRIST.capitalize()}: the scope head cannot tell these apart (forearm {share:.0%}, "
                f"joint end {self.joint_end_share:.0%}); name the body part to get a verdict."
            )
        if not self.confident:
            return f"The body part is uncertain (most likely {part}, {share:.0%}): pick it yourself if you know it."
        if part in IN_SCOPE_STUDY_TYPES:
            return f"Looks like a {part} radiograph ({share:.0%}), which the model was trained on."
        looks = {
            "other": "a radiograph of a body part other than the arm",
            JOINT_CLOSE_UP: "a close view of a joint (wrist, elbow or shoulder)",
        }.get(part, f"a {part} radiograph")
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
    preselect: bool = False
    """Whether apps may pre-select the body part from this head: set by core.scoping.fit only when the head
    met the pre-registered rule on MURA valid/ (docs/experiments.md); otherwise they only suggest."""

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
            ScopeAssessment(
                {c: float(p) for c, p in zip(self.classes, row, strict=True)}, float(d), self.distance_threshold
            )
            for row, d in zip(probabilities, distances, strict=True)
        ]

    def save(self, path: Path) -> None:
        """Write the head as float32 arrays in an ``.npz`` (no pickle), atomically (core.store.atomic: a
        temporary file of its own, so a killed or concurrent save never leaves a torn or mixed head).

        Raises:
            atomic.AtomicWriteError: the file could not be written; the previous head is untouched.
        """
        arrays = {name: getattr(self, name) for name in _ARRAY_FIELDS}
        atomic.save_npz(
            path,
            classes=np.array(self.classes),
            distance_threshold=self.distance_threshold,
            feature_source=np.array(self.feature_source),
            preselect=self.preselect,
            **{k: v.astype(np.float32) for k, v in arrays.items()},
        )


#: The head's float arrays, as ScopeHead.save writes them and load_head reads them.
_ARRAY_FIELDS = (
    "scaler_mean",
    "scaler_scale",
    "coef",
    "intercept",
    "pca_mean",
    "pca_components",
    "location",
    "precision",
)


def load_head(path: Path) -> ScopeHead:
    """Read a head written by :meth:`ScopeHead.save`; never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {name: data[name].astype(np.float64) for name in _ARRAY_FIELDS}
            classes = tuple(str(c) for c in data["classes"])
            threshold = float(data["distance_threshold"])
            source = str(data["feature_source"]) if "feature_source" in data.files else "model"
            preselect = bool(data["preselect"]) if "preselect" in data.files else False
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ScopeHeadError(f"The scope head {path.name} cannot be read ({type(exc).__name__}).") from exc
    if (
        not set(IN_SCOPE_STUDY_TYPES) <= set(classes)
        or len(set(classes)) != len(classes)
        or fields["coef"].shape[0] != len(classes)
    ):
        raise ScopeHeadError(f"The scope head {path.name} does not hold the expected classes.")
    if source not in FEATURE_SOURCES:
        raise ScopeHeadError(f"The scope head {path.name} reads an unknown feature source.")
    return ScopeHead(classes, distance_threshold=threshold, feature_source=source, preselect=preselect, **fields)


#: The head's targets, as scope_metrics.json's summary keys: (measure, key, target or None).
SCOPE_TARGETS: tuple[tuple[str, str, float | None], ...] = (
    (
        "Out-of-scope AUROC: in = MURA valid/ humerus and forearm; out = MURA's other body parts, held-out "
        "FracAtlas images, non-radiographs",
        "out_of_scope_auroc",
        0.95,
    ),
    (
        "The same with FracAtlas hand and shoulder counted in scope (the issue's second wording)",
        "out_of_scope_auroc_issue_definition",
        0.95,
    ),
    ("Humerus vs forearm, per MURA valid/ study", "body_part_accuracy_humerus_vs_forearm_study", 0.98),
    ("MURA valid/ humerus and forearm views kept in scope", "mura_valid_humerus_forearm_kept_in_scope", None),
    ("MURA valid/ views of other body parts flagged", "mura_valid_other_parts_flagged", None),
    ("Held-out FracAtlas leg/hip flagged", "fracatlas_leg_hip_flagged_held_out", None),
    ("Non-radiograph pictures flagged", "non_radiograph_probes_flagged", None),
)


def target_rows(summary: dict) -> list[dict[str, str]]:
    """The head's measured figures against its targets (SCOPE_TARGETS), as rows of text (Model card page).

    ``summary`` is scope_metrics.json's; a measure it lacks reads "not measured" rather than failing.
    """
    from core.eval.metrics import format_interval  # here: core.predict imports this module, not scikit-learn

    rows = []
    for measure, key, target in SCOPE_TARGETS:
        value = summary.get(key)
        if not isinstance(value, dict):
            result, point = "not measured", None
        elif value.get("point") is None and "hits" in value:
            result, point = f"{value['hits']} of {value['of']}", None
        else:
            result, point = format_interval(value), value.get("point")
            if "hits" in value:
                result += f"; {value['hits']} of {value['of']}"
        met = "" if target is None else "not measured" if point is None else "yes" if point >= target else "no"
        rows.append(
            {
                "Measure": measure,
                "Result (95% CI)": result,
                "Target": "" if target is None else f"≥ {target:g}",
                "Met": met,
            }
        )
    return rows
