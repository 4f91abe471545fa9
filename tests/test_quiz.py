"""core.eval.quiz: difficulty tags from cached data, a seeded case order, answers judged by the localisation
hit rule, and the session score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.data import fracatlas, fracture_split
from core.eval import localization, quiz
from core.eval.evaluation import FRACATLAS, region_thresholds
from core.model.card import read_card
from core.store.artifacts import ModelArtifacts, read_evaluation

SAMPLES = Path(__file__).resolve().parent.parent / "data_samples" / "fracatlas"
#: The shipped two-output model: its FracAtlas questions are read with P(fracture) (issue 28, item 5).
FRACTURE_MODEL = "mura_efficientnet_lite0_fracture"


def _case(abnormal: bool = True, **fields: object) -> quiz.QuizCase:
    return quiz.QuizCase("fracatlas/images/x.jpg", "FracAtlas", abnormal, "hand", 0.5, **fields)


def _mask() -> np.ndarray:
    mask = np.zeros((100, 120), dtype=bool)
    mask[40:45, 50:70] = True
    return mask


def _shares(root: Path) -> dict[str, float]:
    outlines = fracatlas.read_outlines(root)
    return {file: quiz.outline_share(outlines.mask(file)) for file in outlines.files()}


def _fracture_model() -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The shipped fracture model's card, cached FracAtlas predictions and FracAtlas split."""
    files = ModelArtifacts.of(FRACTURE_MODEL)
    split = fracture_split.read_split(files.directory / fracture_split.SPLIT_FILE)
    return read_card(files.card), read_evaluation(files, FRACATLAS).predictions, split


@pytest.fixture(scope="module")
def sample_cases() -> list[quiz.QuizCase]:
    """The shipped FracAtlas samples as quiz cases of the fracture model, with its cached probabilities."""
    root = fracatlas.resolve_root(SAMPLES)
    card, cached, split = _fracture_model()
    return quiz.fracatlas_cases(
        fracatlas.read_images(root),
        _shares(root),
        region_thresholds(card),
        cached,
        card=card,
        trained=fracture_split.trained_files(split),
    )


def test_sample_cases_are_tagged_from_cached_data(sample_cases: list[quiz.QuizCase]) -> None:
    by_file = {case.ref.removeprefix("fracatlas/images/"): case for case in sample_cases}
    assert len(sample_cases) == 13 and "IMG0003925.jpg" not in by_file  # leg/hip: no threshold, left out
    # The cached P(fracture) below the fracture threshold on two fractures: two missed fractures.
    assert {f for f, c in by_file.items() if quiz.MODEL_WRONG in c.tags} == {"IMG0002627.jpg", "IMG0002579.jpg"}
    assert all(c.not_scored is None for c in sample_cases)
    assert {f for f, c in by_file.items() if quiz.HARDWARE in c.tags} == {"IMG0002603.jpg"}
    assert {f for f, c in by_file.items() if quiz.SUBTLE in c.tags} == {
        "IMG0002603.jpg",
        "IMG0002486.jpg",
        "IMG0002569.jpg",
    }
    assert all(c.outlined == c.abnormal for c in sample_cases)
    cached = _fracture_model()[1].set_index("file")["fracture_probability"]
    assert by_file["IMG0002334.jpg"].probability == pytest.approx(cached["images/IMG0002334.jpg"])


def test_a_fracture_model_asks_only_images_it_never_trained_on_with_its_fracture_output() -> None:
    """Issue 28, items 3 and 5: P(fracture) at the card's fracture threshold, never P(abnormal) at a
    region's; no radiograph the fracture output trained on is asked."""
    root = fracatlas.resolve_root(SAMPLES)
    images = fracatlas.read_images(root)
    card, cached, split = _fracture_model()
    trained = {"images/IMG0002334.jpg", "images/IMG0001902.jpg"}  # as if two samples sat in a training fold
    cases = quiz.fracatlas_cases(images, _shares(root), region_thresholds(card), cached, card=card, trained=trained)
    refs = {c.ref.removeprefix("fracatlas/") for c in cases}
    assert len(cases) == 11 and not refs & trained
    fracture = dict(zip(cached["file"], cached["fracture_probability"], strict=True))
    abnormal = dict(zip(cached["file"], cached["probability"], strict=True))
    for case in cases:
        file = case.ref.removeprefix("fracatlas/")
        threshold = card["fracture_threshold"]
        assert case.output == "fracture" and case.threshold == threshold
        assert case.probability == pytest.approx(fracture[file]) and case.probability != abnormal[file]
        assert case.model_call(fracture[file]) == (fracture[file] >= threshold)
        assert (quiz.MODEL_WRONG in case.tags) == ((fracture[file] >= threshold) != case.abnormal)
    with pytest.raises(ValueError, match="files it trained on"):
        quiz.fracatlas_cases(images, {}, region_thresholds(card), cached, card=card)
    # The shipped split's test part holds every sample: nothing is left out there.
    assert (
        len(quiz.fracatlas_cases(images, {}, {}, cached, card=card, trained=fracture_split.trained_files(split))) == 13
    )
    words = quiz.compared(cases)
    assert f"fracture output (P(fracture), called fracture at or above {card['fracture_threshold']:.3f})" in words
    assert "expert's fracture label" in words and "never trained on" in words


def test_a_seed_gives_one_sequence(sample_cases: list[quiz.QuizCase]) -> None:
    first = quiz.sequence(sample_cases, seed=3, length=10)
    assert first == quiz.sequence(list(reversed(sample_cases)), seed=3, length=10)  # listing order is irrelevant
    assert len(first) == 10 and len({c.ref for c in first}) == 10
    assert first != quiz.sequence(sample_cases, seed=4, length=10)
    subtle = quiz.sequence(sample_cases, difficulty=quiz.SUBTLE, seed=3, length=10)
    assert len(subtle) == 3 and all(quiz.SUBTLE in c.tags for c in subtle)
    with pytest.raises(ValueError, match="Unknown difficulty"):
        quiz.sequence(sample_cases, difficulty="impossible")


def test_a_point_is_judged_like_a_maps_peak() -> None:
    mask = _mask()
    inside = quiz.judge(_case(), learner_abnormal=True, point=(60, 42), mask=mask, model_abnormal=True)
    assert inside.learner_hit and inside.learner_distance == 0 and inside.learner_found
    near = quiz.judge(_case(), learner_abnormal=True, point=(60, 45 + 14), mask=mask, model_abnormal=True)
    far = quiz.judge(_case(), learner_abnormal=True, point=(60, 45 + 16), mask=mask, model_abnormal=True)
    assert near.learner_hit and not far.learner_hit and far.learner_right and not far.learner_found
    # The same distance rule as the pointing game: a map peaking at each point scores the same.
    for result in (near, far):
        heatmap = np.zeros(mask.shape, dtype=np.float32)
        heatmap[result.learner_point[1], result.learner_point[0]] = 1.0
        assert localization.score_map(heatmap, mask).hit == float(result.learner_hit)
        judged = quiz.judge(
            _case(), learner_abnormal=False, point=None, mask=mask, model_abnormal=True, heatmap=heatmap
        )
        assert judged.map_hit == result.learner_hit and judged.map_peak == result.learner_point


def test_a_normal_call_points_nowhere_and_mura_has_no_outline() -> None:
    missed = quiz.judge(_case(), learner_abnormal=False, point=(60, 42), mask=_mask(), model_abnormal=False)
    assert missed.learner_point is None and missed.learner_hit is None
    assert not missed.learner_right and not missed.learner_found and missed.outlined
    study = quiz.QuizCase("MURA-v1.1/valid/XR_HUMERUS/patient1/study1_negative/", "MURA", False, "XR_HUMERUS", 0.33)
    mura = quiz.judge(study, learner_abnormal=False, point=None, mask=None, model_abnormal=True)
    assert mura.learner_right and not mura.model_right and not mura.outlined
    with pytest.raises(ValueError, match="outside"):
        quiz.outline_distance(_mask(), (500, 5))


def test_score_counts_calls_and_fractures_found() -> None:
    mask, heatmap = _mask(), _mask().astype(np.float32)
    results = [
        quiz.judge(_case(), learner_abnormal=True, point=(60, 42), mask=mask, model_abnormal=True, heatmap=heatmap),
        quiz.judge(_case(), learner_abnormal=False, point=None, mask=mask, model_abnormal=False, heatmap=heatmap),
        quiz.judge(_case(False), learner_abnormal=False, point=None, mask=None, model_abnormal=True),
    ]
    totals = quiz.score(results)
    assert totals == quiz.Score(
        cases=3,
        learner_right=2,
        model_right=1,
        outlined=2,
        learner_found=1,
        model_found=1,
        model_cases=3,
        model_outlined=2,
    )
    assert quiz.Score.share(totals.learner_found, totals.outlined) == 0.5
    assert quiz.Score.share(0, 0) is None


def test_mura_cases_take_the_cards_threshold() -> None:
    studies = pd.DataFrame(
        {
            "study_path": ["a/", "b/"],
            "study_type": ["XR_HUMERUS", "XR_WRIST"],
            "label": [1, 0],
            "probability": [0.2, 0.6],
        }
    )
    card = {"training_data": {"all": {"XR_HUMERUS": {}, "XR_WRIST": {}}}}
    cases = quiz.mura_cases(studies, {"XR_HUMERUS": 0.3, "default": 0.5}, card=card)
    assert [c.threshold for c in cases] == [0.3, 0.5]
    assert all(quiz.MODEL_WRONG in c.tags for c in cases)


def test_the_model_is_scored_only_on_body_parts_and_labels_it_was_trained_on() -> None:
    """Issue 27, item 4: a wrist study or a FracAtlas fracture gets no model verdict and no right/wrong."""
    card = {"training_data": {"all": {"XR_FOREARM": {}, "XR_HUMERUS": {}}}}
    studies = pd.DataFrame(
        {
            "study_path": ["a/", "b/"],
            "study_type": ["XR_HUMERUS", "XR_SHOULDER"],
            "label": [1, 0],
            "probability": [0.2, 0.6],
        }
    )
    humerus, shoulder = quiz.mura_cases(studies, {"XR_HUMERUS": 0.3, "default": 0.5}, card=card)
    assert humerus.threshold == 0.3 and humerus.not_scored is None and quiz.MODEL_WRONG in humerus.tags
    assert shoulder.threshold is None and "shoulder is out of scope" in shoulder.not_scored
    assert quiz.MODEL_WRONG not in shoulder.tags
    root = fracatlas.resolve_root(SAMPLES)
    thresholds = {"hand": 0.45, "shoulder": 0.41, "hand+shoulder": 0.4}
    cases = quiz.fracatlas_cases(fracatlas.read_images(root), {}, thresholds, card=card)
    assert cases and all(c.threshold is None and "not fracture" in c.not_scored for c in cases)
    assert all(c.output == "abnormal" for c in cases) and "not scored" in quiz.compared(cases)
    assert "radiologists' normal/abnormal label" in quiz.compared([humerus])
    result = quiz.judge(cases[0], learner_abnormal=True, point=None, mask=None, model_abnormal=None)
    totals = quiz.score(
        [
            result,
            quiz.judge(humerus, learner_abnormal=True, point=None, mask=None, model_abnormal=humerus.model_call(0.2)),
        ]
    )
    assert (totals.cases, totals.model_cases, totals.model_right) == (2, 1, 0)
    assert not result.model_scored and not result.model_right
