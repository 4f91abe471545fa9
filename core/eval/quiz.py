"""The "Read it yourself" quiz: which cases, in which order, how an answer is judged, and the score.

Radiology is taught "look first, then compare": the learner reads a radiograph with no answer shown,
says normal or abnormal and, for abnormal, points at the lesion; then the truth, the expert outline
and the model's verdict and heat map are revealed. This module is that logic without any UI:

- a :class:`QuizCase` per radiograph or study, tagged by difficulty from cached data only
  (``model wrong``: the cached probability is on the wrong side of the card's threshold;
  ``hardware``: FracAtlas's hardware flag; ``subtle``: a fracture whose expert outline covers less
  than ``SUBTLE_AREA_SHARE`` of the image);
- :func:`sequence`: a seeded order, so a teacher who gives a class one seed gives it one sequence;
- :func:`judge`: the learner's point and the model's map are held to the same hit rule as the
  localisation metrics (:mod:`core.eval.localization`: within ``TOLERANCE_PX`` of the outline);
- :func:`score`: learner against model over a session. Nothing here stores anything about a person.

Example:
    >>> order = sequence(cases, difficulty="subtle", seed=7, length=10)  # doctest: +SKIP
    >>> result = judge(case, learner_abnormal=True, point=(120, 88), mask=mask,  # doctest: +SKIP
    ...                model_abnormal=True, heatmap=heatmap)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from core.eval import localization
from core.eval.evaluation import FRACTURE_COLUMN
from core.model.card import FRACATLAS_LABEL, MURA_LABEL, model_outputs, out_of_scope_reason, threshold_for

__all__ = [
    "SUBTLE_AREA_SHARE",
    "DEFAULT_LENGTH",
    "MODEL_WRONG",
    "SUBTLE",
    "HARDWARE",
    "EVERY_CASE",
    "DIFFICULTIES",
    "QuizCase",
    "CaseResult",
    "Score",
    "outline_share",
    "fracatlas_cases",
    "mura_cases",
    "sequence",
    "outline_distance",
    "map_peak",
    "judge",
    "score",
    "compared",
]

#: A fracture whose outline covers less of the image than this is "subtle". On the 376 outlined
#: upper-limb FracAtlas radiographs the outline's share has quartiles 0.18%, 0.28% and 0.43%: this
#: cut takes the smallest 43% (162 of 376), the fractures a reader most easily misses.
SUBTLE_AREA_SHARE = 0.0025
#: Cases per quiz unless the teacher asks for another number.
DEFAULT_LENGTH = 10
MODEL_WRONG = "model wrong"
SUBTLE = "subtle"
HARDWARE = "hardware"
EVERY_CASE = "every case"
#: Difficulty -> what it selects, in the words the page shows.
DIFFICULTIES = {
    EVERY_CASE: "every case, normal and abnormal",
    MODEL_WRONG: "cases the model gets wrong at its threshold",
    SUBTLE: f"fractures with a small outline (under {SUBTLE_AREA_SHARE:.2%} of the image)",
    HARDWARE: "radiographs with metal hardware",
}


@dataclass(frozen=True)
class QuizCase:
    """One case: a FracAtlas radiograph (``ref`` ``fracatlas/<file>``) or a MURA study (official path).

    ``abnormal`` is the reference label (FracAtlas: fracture); ``output`` the model output the case is
    read with (``"abnormal"``, or ``"fracture"`` for a FracAtlas case of a model with a fracture output);
    ``probability`` the model's cached P(output), None when no cache covers it; ``threshold`` that
    output's threshold for its body part, None when the model is not scored on the case: ``not_scored``
    then says why (core.model.card.out_of_scope_reason: a body part or a label the model was not trained on).
    """

    ref: str
    source: str
    abnormal: bool
    body_part: str
    threshold: float | None
    probability: float | None = None
    tags: frozenset[str] = frozenset()
    outlined: bool = False
    not_scored: str | None = None
    output: str = MURA_LABEL

    def model_call(self, probability: float) -> bool | None:
        """The model's call (abnormal, or fracture for the fracture output) at the case's threshold; None where
        it is not scored."""
        return None if self.threshold is None else probability >= self.threshold


@dataclass(frozen=True)
class CaseResult:
    """How the learner and the model did on one case.

    ``learner_hit`` / ``map_hit``: whether the learner's point / the map's peak lies within the
    tolerance of the outline; None where the case has no outline (or the learner gave no point).
    ``model_abnormal`` is None where the model is not scored (QuizCase.not_scored).
    ``learner_distance``: pixels from the learner's point to the outline (0 inside it).
    """

    ref: str
    abnormal: bool
    learner_abnormal: bool
    model_abnormal: bool | None
    outlined: bool
    learner_point: tuple[int, int] | None = None
    learner_distance: float | None = None
    learner_hit: bool | None = None
    map_peak: tuple[int, int] | None = None
    map_hit: bool | None = None

    @property
    def learner_right(self) -> bool:
        """The learner's normal/abnormal call matches the reference label."""
        return self.learner_abnormal == self.abnormal

    @property
    def model_scored(self) -> bool:
        """Whether the model is scored on this case (a body part and label it was trained on)."""
        return self.model_abnormal is not None

    @property
    def model_right(self) -> bool:
        """The model's call at its threshold matches the reference label (never, where it is not scored)."""
        return self.model_scored and self.model_abnormal == self.abnormal

    @property
    def learner_found(self) -> bool:
        """Called it abnormal and pointed within the tolerance of the outline."""
        return self.learner_abnormal and bool(self.learner_hit)

    @property
    def model_found(self) -> bool:
        """Called it abnormal and its map's peak lies within the tolerance of the outline."""
        return bool(self.model_abnormal) and bool(self.map_hit)


@dataclass(frozen=True)
class Score:
    """A session's running score: the learner's calls right out of ``cases`` and fractures found out of
    ``outlined``; the model's out of the cases it is scored on (``model_cases``, ``model_outlined``)."""

    cases: int
    learner_right: int
    model_right: int
    outlined: int
    learner_found: int
    model_found: int
    model_cases: int
    model_outlined: int

    @staticmethod
    def share(part: int, whole: int) -> float | None:
        """``part / whole``, None for an empty whole (nothing to score yet)."""
        return part / whole if whole else None


def outline_share(mask: np.ndarray) -> float:
    """The share of an image's pixels inside its expert outlines: what "subtle" is judged on."""
    return float(mask.mean()) if mask.size else 0.0


def fracatlas_cases(
    images: pd.DataFrame,
    outline_shares: Mapping[str, float],
    thresholds: Mapping[str, float],
    cached: pd.DataFrame | None = None,
    *,
    card: Mapping[str, object],
    trained: Collection[str] | None = None,
) -> list[QuizCase]:
    """Cases from a FracAtlas table (core.data.fracatlas.read_images): its upper-limb images only.

    ``outline_shares`` maps an outlined file to the share of its pixels inside the expert outlines
    (:func:`outline_share`); ``thresholds`` the card's P(abnormal) threshold per region
    (core.eval.evaluation.region_thresholds); ``cached`` the model's cached FracAtlas predictions (``file``,
    ``probability`` and, for a fracture output, ``fracture_probability``), whose rows give ``probability``
    and the ``model wrong`` tag. Leg/hip is left out.

    ``card`` decides (core.model.card.out_of_scope_reason) whether the model is scored on FracAtlas's
    *fracture* label: only a model with a fracture output is, and then with that output (P(fracture) at
    the card's ``fracture_threshold``), never with P(abnormal); the others are shown, not scored. Such a
    model's cases leave out ``trained`` (core.data.fracture_split.trained_files: what its fracture output
    fitted), so every question and score it gives comes from images it never trained on.

    Raises:
        ValueError: a model with a fracture output and no ``trained`` (which images are its test images
            must be known before any is shown) or no ``fracture_threshold`` on its card.
    """
    fracture = FRACATLAS_LABEL in model_outputs(card)
    if fracture and trained is None:
        raise ValueError("A model with a fracture output needs the files it trained on to keep them out of the quiz.")
    given = card.get("fracture_threshold") if fracture else None
    if fracture and not isinstance(given, int | float):
        raise ValueError("The model card gives its fracture output no fracture_threshold.")
    fracture_threshold = float(given) if isinstance(given, int | float) else None
    column = FRACTURE_COLUMN if fracture else "probability"
    # A cache without the output's column (written before it existed) gives no probabilities: the model is run.
    probabilities = (
        dict(zip(cached["file"].astype(str), cached[column], strict=True))
        if cached is not None and column in cached.columns
        else {}
    )
    left_out = frozenset(trained or ())
    cases = []
    for row in images[images["upper_limb"].astype(bool)].itertuples():
        file, region = str(row.file), str(row.region)
        if file in left_out:
            continue
        not_scored = out_of_scope_reason(card, region, FRACATLAS_LABEL)
        threshold = fracture_threshold
        if not_scored:
            threshold = None
        elif threshold is None:
            threshold = float(thresholds[region])
        abnormal = bool(row.fractured)
        probability = probabilities.get(file)
        probability = None if probability is None or pd.isna(probability) else float(probability)
        share = float(outline_shares.get(file, 0.0))
        tags = set()
        if probability is not None and threshold is not None and (probability >= threshold) != abnormal:
            tags.add(MODEL_WRONG)
        if int(row.hardware):
            tags.add(HARDWARE)
        if abnormal and 0.0 < share < SUBTLE_AREA_SHARE:
            tags.add(SUBTLE)
        cases.append(
            QuizCase(
                f"fracatlas/{file}",
                "FracAtlas",
                abnormal,
                region,
                threshold,
                probability,
                frozenset(tags),
                share > 0.0,
                not_scored,
                FRACATLAS_LABEL if fracture else MURA_LABEL,
            )
        )
    return cases


def mura_cases(studies: pd.DataFrame, thresholds: Mapping[str, float], *, card: Mapping[str, object]) -> list[QuizCase]:
    """Cases from MURA studies (``study_path``, ``study_type``, ``label`` and, where cached, the study's
    ``probability``: core.eval.metrics.study_table of the cached predictions). MURA has no outlines. The
    model is scored only on the body parts ``card`` says it was trained on (core.model.card.out_of_scope_reason)."""
    cases = []
    for row in studies.itertuples():
        not_scored = out_of_scope_reason(card, str(row.study_type), MURA_LABEL)
        threshold = None if not_scored else threshold_for(thresholds, str(row.study_type))
        probability = getattr(row, "probability", None)
        probability = None if probability is None or pd.isna(probability) else float(probability)
        abnormal = bool(row.label)
        wrong = probability is not None and threshold is not None and (probability >= threshold) != abnormal
        cases.append(
            QuizCase(
                str(row.study_path),
                "MURA",
                abnormal,
                str(row.study_type),
                threshold,
                probability,
                frozenset({MODEL_WRONG} if wrong else set()),
                not_scored=not_scored,
            )
        )
    return cases


def sequence(
    cases: Iterable[QuizCase], *, difficulty: str = EVERY_CASE, seed: int = 0, length: int = DEFAULT_LENGTH
) -> list[QuizCase]:
    """Up to ``length`` cases of ``difficulty`` in a seeded order.

    The cases are sorted by reference before the shuffle, so the same pool, difficulty and seed give
    the same sequence on every machine, whatever order the files were listed in.
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"Unknown difficulty {difficulty!r}; use one of {', '.join(DIFFICULTIES)}.")
    pool = sorted((c for c in cases if difficulty == EVERY_CASE or difficulty in c.tags), key=lambda c: c.ref)
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[: max(0, length)]]


def outline_distance(mask: np.ndarray, point: tuple[int, int]) -> float:
    """Pixels (Euclidean) from ``point`` (x, y) to the nearest outlined pixel; 0 inside the outline.

    The same distance that :func:`core.eval.localization.tolerance_region` thresholds, so a point is a hit
    exactly when a map's peak at that pixel would be.
    """
    x, y = point
    height, width = mask.shape
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"The point ({x}, {y}) lies outside the {width}x{height} image.")
    return float(ndimage.distance_transform_edt(~mask.astype(bool))[y, x])


def map_peak(heatmap: np.ndarray) -> tuple[int, int]:
    """The (x, y) of the map's maximum: where the map "points" (the first one on a tie)."""
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(x), int(y)


def judge(
    case: QuizCase,
    *,
    learner_abnormal: bool,
    point: tuple[int, int] | None,
    mask: np.ndarray | None,
    model_abnormal: bool | None,
    heatmap: np.ndarray | None = None,
    tolerance: float = localization.TOLERANCE_PX,
) -> CaseResult:
    """Judge one answer against the truth and the model.

    The learner's point counts only with an "abnormal" call. With an outline, the point is a hit
    within ``tolerance`` pixels of it, and the map by the pointing game of the localisation metrics
    (its maximum within the same tolerance; a tie counts as a hit when most of the tied pixels are in).
    ``model_abnormal`` is None where the model is not scored on the case (its map is still judged).
    """
    point = point if learner_abnormal else None
    if mask is None or not mask.any():
        peak = None if heatmap is None else map_peak(heatmap)
        return CaseResult(case.ref, case.abnormal, learner_abnormal, model_abnormal, False, point, map_peak=peak)
    distance = None if point is None else outline_distance(mask, point)
    map_hit = peak = None
    if heatmap is not None:
        if heatmap.shape != mask.shape:
            raise ValueError(f"The heat map {heatmap.shape} and the outline {mask.shape} differ in size.")
        region = localization.tolerance_region(mask, tolerance)
        map_hit = localization.pointing_hit(localization.normalised(heatmap), region) >= 0.5
        peak = map_peak(heatmap)
    return CaseResult(
        case.ref,
        case.abnormal,
        learner_abnormal,
        model_abnormal,
        True,
        point,
        distance,
        None if distance is None else distance <= tolerance,
        peak,
        map_hit,
    )


def score(results: Sequence[CaseResult]) -> Score:
    """The session so far: right calls of each, and fractures each found among the outlined cases."""
    outlined = [r for r in results if r.outlined]
    return Score(
        cases=len(results),
        learner_right=sum(r.learner_right for r in results),
        model_right=sum(r.model_right for r in results),
        outlined=len(outlined),
        learner_found=sum(r.learner_found for r in outlined),
        model_found=sum(r.model_found for r in outlined),
        model_cases=sum(r.model_scored for r in results),
        model_outlined=sum(r.model_scored for r in outlined),
    )


def compared(cases: Sequence[QuizCase]) -> str:
    """What the model's column of a quiz compares, in plain words: which output against which label, at
    which threshold, so a learner never reads a P(abnormal) call as a fracture call."""
    parts = []
    fracture = [c for c in cases if c.output == FRACATLAS_LABEL]
    thresholds = sorted({c.threshold for c in fracture if c.threshold is not None})
    if fracture:
        at = f" at or above {thresholds[0]:.3f}" if len(thresholds) == 1 else ""
        parts.append(
            f"on FracAtlas radiographs, the model's fracture output (P(fracture), called fracture{at}) against "
            "the expert's fracture label, asked only on radiographs that output never trained on"
        )
    if any(c.source == "FracAtlas" and c.output != FRACATLAS_LABEL for c in cases):
        parts.append(
            "on FracAtlas radiographs, the model's P(abnormal), shown for reference and not scored: the model "
            "has no fracture output, and MURA's abnormal is not FracAtlas's fracture"
        )
    if any(c.source == "MURA" for c in cases):
        parts.append(
            "on MURA studies, the model's P(abnormal) (the mean of the study's views), called abnormal at or "
            "above its threshold for the body part, against the radiologists' normal/abnormal label"
        )
    return ("What the model's column compares: " + "; ".join(parts) + ".") if parts else ""
