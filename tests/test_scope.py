"""core.scope: the body-part / out-of-scope head, on synthetic features and on the shipped head."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from core.model.checkpoint import DEFAULT_MODEL, load_model
from core.scoping import fit as scope_fit
from core.scoping import head as scope
from core.scoping.fit import fit_head
from core.scoping.head import SCOPE_CLASSES, ScopeAssessment, ScopeHeadError, load_head
from core.store.artifacts import SCOPE_HEAD_FILE, ModelArtifacts


def _clusters(n_per_class: int = 40, dims: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five well-separated Gaussian clusters, one per class; groups of two images each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (len(SCOPE_CLASSES), dims))
    features = np.concatenate([c + rng.normal(0, 1, (n_per_class, dims)) for c in centres])
    labels = np.repeat(np.arange(len(SCOPE_CLASSES)), n_per_class)
    groups = np.arange(len(labels)) // 2
    return features.astype(np.float32), labels, groups


@pytest.fixture(scope="module")
def fitted():
    features, labels, groups = _clusters()
    head, oof_probabilities, oof_distances = fit_head(features, labels, groups)
    return head, features, labels, oof_probabilities, oof_distances


def test_separable_classes_are_recovered_out_of_fold(fitted):
    head, features, labels, oof_probabilities, oof_distances = fitted
    assert (oof_probabilities.argmax(axis=1) == labels).mean() > 0.95
    assert np.allclose(oof_probabilities.sum(axis=1), 1)
    # The threshold is the 99th percentile of out-of-fold distances: about 1% of training images exceed it.
    assert (oof_distances > head.distance_threshold).mean() <= 0.02


def test_head_matches_scikit_learn(fitted):
    """The stored arrays reproduce the scikit-learn objects they were taken from."""
    head, features, labels, *_ = fitted
    scaler, classifier, pca, covariance = scope_fit._fit_parts(features, labels)
    standardised = scaler.transform(features)
    np.testing.assert_allclose(head.probabilities(features), classifier.predict_proba(standardised), atol=1e-6)
    expected = np.sqrt(covariance.mahalanobis(pca.transform(standardised)))
    np.testing.assert_allclose(head.distances(features), expected, rtol=1e-5)


def test_far_features_are_unusual_and_never_in_scope(fitted):
    head, features, *_ = fitted
    far = features[:3] + 200.0
    for assessment in head.assess(far):
        assert not assessment.typical and not assessment.in_scope and assessment.study_type is None
        assert "does not look like" in assessment.reason()


def test_save_and_load_round_trip(fitted, tmp_path):
    head, features, *_ = fitted
    path = tmp_path / SCOPE_HEAD_FILE
    head.save(path)
    again = load_head(path)
    np.testing.assert_allclose(again.probabilities(features), head.probabilities(features), atol=1e-4)
    assert again.distance_threshold == pytest.approx(head.distance_threshold)
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("content", [b"", b"not a zip", pickle.dumps({"coef": 1})])
def test_unreadable_or_pickled_head_is_refused(tmp_path, content):
    path = tmp_path / SCOPE_HEAD_FILE
    path.write_bytes(content)
    with pytest.raises(ScopeHeadError, match=SCOPE_HEAD_FILE):
        load_head(path)


@pytest.mark.parametrize(
    ("probabilities", "distance", "study_type", "flagged", "words"),
    [
        (
            {"humerus": 0.9, "forearm": 0.05, "hand/wrist": 0.03, "shoulder": 0.01, "other": 0.01},
            1.0,
            "XR_HUMERUS",
            False,
            "humerus radiograph",
        ),
        (
            {"humerus": 0.05, "forearm": 0.9, "hand/wrist": 0.01, "shoulder": 0.03, "other": 0.01},
            1.0,
            "XR_FOREARM",
            False,
            "forearm radiograph",
        ),
        # A forearm call with a joint end in doubt (a MURA valid/ wrist view's figures): no suggestion,
        # the user names it.
        (
            {
                "humerus": 0.001,
                "forearm": 0.783,
                "hand/wrist": 0.007,
                "shoulder": 0.0,
                "joint close-up": 0.157,
                "other": 0.051,
            },
            1.0,
            None,
            False,
            "forearm or wrist: the scope head cannot tell these apart",
        ),
        (
            {"humerus": 0.05, "forearm": 0.1, "hand/wrist": 0.8, "shoulder": 0.03, "other": 0.02},
            1.0,
            None,
            True,
            "humerus and forearm radiographs only",
        ),
        (
            {"humerus": 0.01, "forearm": 0.01, "hand/wrist": 0.01, "shoulder": 0.01, "other": 0.96},
            1.0,
            None,
            True,
            "other than the arm",
        ),
        (
            {"humerus": 0.45, "forearm": 0.4, "hand/wrist": 0.1, "shoulder": 0.03, "other": 0.02},
            1.0,
            None,
            False,
            "uncertain",
        ),
        (
            {"humerus": 0.9, "forearm": 0.05, "hand/wrist": 0.03, "shoulder": 0.01, "other": 0.01},
            9.0,
            None,
            True,
            "does not look like",
        ),
    ],
)
def test_assessment_decides_scope_and_says_why(probabilities, distance, study_type, flagged, words):
    assessment = ScopeAssessment(probabilities, distance, distance_threshold=5.0)
    assert assessment.study_type == study_type
    assert assessment.out_of_scope == flagged and assessment.in_scope == (not flagged)
    assert words in assessment.reason().lower()


@pytest.mark.parametrize(
    ("probabilities", "distance", "colour", "score"),
    [
        ({"humerus": 0.7, "forearm": 0.2, "other": 0.1}, 1.0, False, 0.1),  # P(outside) decides
        ({"humerus": 0.2, "forearm": 0.2, "other": 0.6}, 1.0, False, 0.6),
        ({"humerus": 0.9, "forearm": 0.1, "other": 0.0}, 10.0, False, 1.5),  # distance / threshold - 0.5
        ({"humerus": 0.9, "forearm": 0.1, "other": 0.0}, 1.0, True, 1.0),  # colour: at least 1
    ],
)
def test_scope_score_is_the_flag_as_a_number(probabilities, distance, colour, score):
    assessment = ScopeAssessment(probabilities, distance, distance_threshold=5.0, colour_image=colour)
    assert assessment.scope_score == pytest.approx(score)
    assert assessment.out_of_scope == (score >= scope.OUT_OF_SCOPE_SCORE)
    assert assessment.as_json()["scope_score"] == pytest.approx(score)


def test_end_crops_take_both_ends_of_the_long_side():
    tall = np.arange(100 * 40, dtype=np.uint16).reshape(100, 40)
    top, bottom = scope_fit.end_crops(tall, 0.4)
    np.testing.assert_array_equal(top, tall[:40])
    np.testing.assert_array_equal(bottom, tall[60:])
    left, right = scope_fit.end_crops(tall.T, 0.25)
    assert left.shape == right.shape == (40, 25)
    np.testing.assert_array_equal(right, tall.T[:, 75:])


def test_non_radiograph_probes_are_offline_grey_and_repeatable():
    probes = scope_fit.non_radiograph_probes()
    again = scope_fit.non_radiograph_probes()
    assert len(probes) == 105 and list(probes) == list(again)
    for name, image in probes.items():
        assert image.dtype == np.uint8 and image.ndim == 2 and min(image.shape) >= 32, name
        np.testing.assert_array_equal(image, again[name])


def test_preselect_flag_survives_saving_and_defaults_to_off(fitted, tmp_path):
    from dataclasses import replace

    head, *_ = fitted
    path = tmp_path / SCOPE_HEAD_FILE
    replace(head, preselect=True).save(path)
    assert load_head(path).preselect
    with np.load(path) as data:  # a head written before the flag existed
        np.savez(path.with_name("old.npz"), **{k: data[k] for k in data.files if k != "preselect"})
    assert not load_head(path.with_name("old.npz")).preselect


def test_fit_refuses_a_missing_class():
    features, labels, groups = _clusters()
    keep = labels != SCOPE_CLASSES.index("shoulder")
    with pytest.raises(ValueError, match="every scope class"):
        fit_head(features[keep], labels[keep], groups[keep])


def test_image_features_are_the_final_layer_input():
    """Features equal what the classifier's last linear layer receives (checked by applying it)."""
    import torch

    loaded = load_model("mura_mobilenet_v2")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (80, 60), dtype=np.uint8) for _ in range(3)]
    features = scope.image_features(loaded, images, batch_size=2)
    assert features.shape == (3, 1280)
    network = scope._feature_network(loaded)
    logits = scope._last_linear(network)(torch.from_numpy(features))
    from core.model.prediction import model_inputs

    with torch.inference_mode():
        expected = network(model_inputs(loaded, images))
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_shipped_head_loads_and_judges_a_photo_as_unusual():
    """The shipped model's head (fitted by python -m core.scope; a model built on a base reads the base's, the
    same network's features) flags a colour photo, in grey, as unusual."""
    from sklearn.datasets import load_sample_images

    loaded = load_model(DEFAULT_MODEL)
    files = ModelArtifacts(loaded.directory)
    path = files.resolve(files.scope_head)
    if not path.is_file():
        pytest.fail(f"{path} is missing: run python -m core.scope to fit it")
    assert scope.head_for(loaded) is not None
    photo = load_sample_images().images[0].mean(axis=2).astype(np.uint8)
    (assessment,) = scope.assess_images(loaded, [photo]) or []
    assert not assessment.in_scope


def _assessment(part: str, distance: float = 1.0, share: float = 0.97) -> ScopeAssessment:
    rest = (1 - share) / (len(SCOPE_CLASSES) - 1)
    return ScopeAssessment({c: share if c == part else rest for c in SCOPE_CLASSES}, distance, distance_threshold=5.0)


def test_study_scope_suggests_agreeing_in_scope_views():
    assert scope.study_scope([_assessment("forearm"), _assessment("forearm")]) == ("XR_FOREARM", None)
    assert scope.study_scope([_assessment("forearm"), _assessment("humerus")]) == (None, None)
    assert scope.study_scope([_assessment("forearm"), _assessment("humerus", share=0.4)]) == (None, None)
    assert scope.study_scope([]) == (None, None)


def test_a_forearm_call_that_may_be_a_wrist_is_not_suggested_and_says_why():
    """Issue 27 item 2: a joint end at JOINT_END_SHARE or more turns a forearm call into "forearm or wrist"."""
    sure, doubtful = _assessment("forearm", share=0.99), _assessment("forearm", share=0.85)
    assert doubtful.joint_end_share >= scope.JOINT_END_SHARE > sure.joint_end_share
    assert doubtful.forearm_or_wrist and doubtful.in_scope and not sure.forearm_or_wrist
    assert scope.study_scope([sure, doubtful]) == (None, None)  # not flagged, but nothing suggested
    assert "cannot tell these apart" in scope.study_ambiguity([sure, doubtful])
    assert scope.study_ambiguity([sure, sure]) is None
    assert doubtful.as_json()["forearm_or_wrist"] is True
    # Humerus calls and flagged views are not what this rule is about.
    assert not _assessment("humerus", share=0.85).forearm_or_wrist
    assert not _assessment("joint close-up").forearm_or_wrist


def test_predict_cli_gives_no_verdict_to_a_mura_wrist_called_forearm(capsys, mura_root):
    """The shipped head calls MURA valid/ wrist views forearm (78-88%), unflagged: without --study-type the
    study gets no verdict and says why; naming the body part gets one."""
    import json

    from core.predict import main

    wrist = mura_root / "valid" / "XR_WRIST" / "patient11186" / "study1_positive" / "image1.png"
    if not wrist.is_file():
        pytest.skip("this MURA copy lacks the valid/ wrist view")
    assert main(["--study", str(wrist)]) == 0
    image, study = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert image["body_part"] == "forearm" and not image["out_of_scope"] and image["scope"]["forearm_or_wrist"]
    assert study["verdict"] is None and study["suggested_study_type"] is None
    assert "cannot tell these apart" in study["scope_ambiguity"]
    assert main(["--study", "--study-type", "XR_FOREARM", str(wrist)]) == 0
    _image, study = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert study["verdict"] in ("normal", "abnormal") and study["verdict_against_scope_flag"] is False


def test_study_scope_flags_out_of_scope_and_colour_views():
    study_type, reason = scope.study_scope([_assessment("forearm"), _assessment("other")])
    assert study_type is None and "other than the arm" in reason
    colour = ScopeAssessment(_assessment("forearm").probabilities, 1.0, 5.0, colour_image=True)
    assert scope.study_scope([colour]) == (None, colour.reason())
    assert "colour image" in colour.reason()


def test_flagged_views_leave_the_study_mean_unless_every_view_is_flagged():
    forearm, other = _assessment("forearm"), _assessment("other")
    assert scope.views_in_study_mean([forearm, other, forearm]) == [0, 2]
    assert scope.views_in_study_mean([other, other]) == [0, 1]
    assert scope.views_in_study_mean([]) == []


SHARED_FRACATLAS = Path(__file__).resolve().parents[2] / "shared" / "fracatlas"
needs_fracatlas = pytest.mark.skipif(
    not (SHARED_FRACATLAS / "labels.csv").is_file(), reason="no FracAtlas copy at ../shared/fracatlas"
)


def _first_leg() -> Path:
    import pandas as pd

    labels = pd.read_csv(SHARED_FRACATLAS / "labels.csv")
    return SHARED_FRACATLAS / labels.loc[labels["region"] == "leg/hip", "file"].iloc[0]


@pytest.mark.slow  # the shipped model and its scope head end to end
@needs_fracatlas
def test_predict_cli_gives_no_verdict_for_a_leg(capsys):
    """core.predict --study on a leg radiograph: the head flags it, the study gets no verdict and a reason."""
    import json

    from core.predict import main

    assert main(["--study", str(_first_leg())]) == 0
    image, study = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert image["scope"]["body_part"] == "other" and not image["scope"]["in_scope"]
    for line in (image, study):  # every line carries the three fields the issue asks for
        assert line["body_part"] == "other" and line["out_of_scope"] is True and line["scope_score"] >= 0.5
    assert study["verdict"] is None and not study["in_scope"] and "other than the arm" in study["scope_reason"]
    assert main(["--study", "--study-type", "XR_FOREARM", str(_first_leg())]) == 0
    _image, study = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert study["verdict"] in ("normal", "abnormal")  # the user named the body part: judged as asked
    assert study["verdict_against_scope_flag"] is True and study["left_out_of_mean"] == []


@pytest.mark.slow  # the shipped model and its scope head end to end
def test_predict_cli_leaves_a_flagged_view_out_of_the_study_mean(capsys, mura_root):
    """A MURA humerus view plus a leg: the leg is flagged and leaves the study's mean (issue 27, item 3)."""
    import json

    from core.data import mura
    from core.predict import main

    if not (SHARED_FRACATLAS / "labels.csv").is_file():
        pytest.skip("no FracAtlas copy at ../shared/fracatlas")
    valid = mura.read_images(mura_root, "valid")
    humerus = str(
        mura.image_file(mura_root, valid[valid["study_type"] == "XR_HUMERUS"].sort_values("path").iloc[0]["path"])
    )
    assert main(["--study", "--study-type", "XR_HUMERUS", humerus, str(_first_leg())]) == 0
    kept, leg, study = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert leg["out_of_scope"] and not kept["out_of_scope"]
    assert study["probability"] == pytest.approx(kept["probability"], abs=1e-6)
    assert study["left_out_of_mean"] == [leg["file"]] and study["verdict_against_scope_flag"] is False


@pytest.mark.slow  # the shipped model and its scope head end to end
@needs_fracatlas
def test_explain_flags_an_uploaded_leg_and_gives_no_verdict():
    """The shipped model on Explain: a leg upload is flagged out of scope, with no verdict."""
    from tests.app_pages import assert_clean, start_app, study_probability

    leg = _first_leg()
    at = start_app().switch_page("../pages/explain.py").run(timeout=120)
    at.file_uploader(key="explain_upload").set_value((leg.name, leg.read_bytes(), "image/jpeg")).run(timeout=300)
    assert_clean(at)
    assert any("other than the arm" in e.value for e in at.error)
    assert not any(m.label == "Verdict" for m in at.metric)
    assert float(study_probability(at)) >= 0
    # The user overrides: naming a trained body part gets the verdict at that part's threshold.
    at.selectbox(key="explain_body_part_upload").set_value("XR_FOREARM").run(timeout=300)
    assert_clean(at)
    assert any(m.label == "Verdict" for m in at.metric)


@pytest.mark.slow  # the shipped model and its scope head end to end
def test_predict_cli_keeps_a_mura_humerus_in_scope(capsys, mura_root):
    """A MURA valid/ humerus study (the first, by path) is recognised and judged: not flagged, with a verdict."""
    import json

    from core.data import mura
    from core.predict import main

    valid = mura.read_images(mura_root, "valid")
    first = valid[valid["study_type"] == "XR_HUMERUS"].sort_values("path").iloc[0]
    files = [
        str(mura.image_file(mura_root, p))
        for p in valid.loc[valid["path"].str.startswith(first["path"].rsplit("/", 1)[0] + "/"), "path"]
    ]
    assert main(["--study", *files]) == 0
    *images, study = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert len(images) == len(files)
    for line in [*images, study]:
        assert line["body_part"] == "humerus" and line["out_of_scope"] is False and line["scope_score"] < 0.5
    assert study["in_scope"] and study["suggested_study_type"] == "XR_HUMERUS"


def test_feature_caches_only_compute_rows_not_cached_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refit on more images (or another cache of the same model) pays forwards for the new ones only."""
    computed: list[int] = []

    def fake_features(loaded: object, images: list[np.ndarray], *, source: str) -> np.ndarray:
        computed.extend(int(image[0, 0]) for image in images)
        return np.array([[float(image[0, 0]), float(image.shape[0])] for image in images], np.float32)

    monkeypatch.setattr(scope_fit, "image_features", fake_features)
    monkeypatch.setattr(scope_fit, "_load_pixels", lambda paths: [np.full((10, 4), int(p.stem)) for p in paths])
    paths = [tmp_path / f"{i}.png" for i in range(5)]
    first = scope_fit._features_of(None, paths[:3], tmp_path / "cache" / "some.npz", "x")
    assert computed == [0, 1, 2] and first[:, 0].tolist() == [0, 1, 2]
    more = scope_fit._features_of(None, paths[::-1], tmp_path / "cache" / "all.npz", "x")
    assert computed == [0, 1, 2, 4, 3] and more[:, 0].tolist() == [4, 3, 2, 1, 0]
    crops = scope_fit._features_of(None, paths[:2], tmp_path / "cache" / "crops.npz", "x", crops=True)
    assert crops[:, 1].tolist() == [4, 4, 4, 4]  # end crops (40% of 10 rows), not the cached whole images


def test_save_writes_through_a_temporary_file_of_its_own(fitted, tmp_path):
    """Two saves never share a fixed temporary name: another writer's ``<name>.tmp.npz`` is left alone."""
    head, features, *_ = fitted
    path = tmp_path / SCOPE_HEAD_FILE
    other = path.with_name(path.name + ".tmp.npz")
    other.write_bytes(b"another writer's half-written head")
    head.save(path)
    assert other.read_bytes() == b"another writer's half-written head"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, other.name])
    np.testing.assert_allclose(load_head(path).probabilities(features), head.probabilities(features), atol=1e-4)


def test_a_failed_save_keeps_the_previous_head_and_says_which_file(fitted, tmp_path, monkeypatch):
    from core.store import atomic

    head, features, *_ = fitted
    path = tmp_path / SCOPE_HEAD_FILE
    head.save(path)
    before = path.read_bytes()

    def full_disk(file, **arrays):  # a full disk: part of the archive written, then the write fails
        file.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full_disk)
    with pytest.raises(atomic.AtomicWriteError, match=SCOPE_HEAD_FILE):
        head.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
