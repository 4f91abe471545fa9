"""core.eval.metrics on small synthetic prediction tables whose answers can be checked by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from core.eval import metrics
from core.eval.evaluation import summarise_trained
from core.eval.metrics import MetricsInputError
from core.model import card


def predictions(studies: list[tuple[str, int, list[float]]]) -> pd.DataFrame:
    """An images table from (study_type, label, view probabilities) per study, with official paths."""
    rows = []
    for number, (study_type, label, view_probabilities) in enumerate(studies):
        patient = f"patient{number:05d}"
        folder = f"MURA-v1.1/valid/{study_type}/{patient}/study1_{'positive' if label else 'negative'}/"
        for view, probability in enumerate(view_probabilities, start=1):
            rows.append(
                {
                    "path": f"{folder}image{view}.png",
                    "study_type": study_type,
                    "patient": patient,
                    "study": "study1",
                    "label": label,
                    "probability": probability,
                }
            )
    return pd.DataFrame(rows, columns=["path", "study_type", "patient", "study", "label", "probability"])


def random_predictions(n_studies: int, seed: int, types: tuple[str, ...] = ("XR_HUMERUS", "XR_FOREARM")):
    """Overlapping but informative scores, one to three views per study."""
    rng = np.random.default_rng(seed)
    studies = []
    for number in range(n_studies):
        label = number % 2
        views = rng.integers(1, 4)
        probabilities = np.clip(rng.normal(0.35 + 0.3 * label, 0.2, size=views), 0, 1)
        studies.append((types[number % len(types)], label, probabilities.tolist()))
    return predictions(studies)


# --- study aggregation --------------------------------------------------------------------------


def test_study_table_takes_the_mean_of_views_and_derives_the_study_path():
    images = predictions([("XR_HUMERUS", 1, [0.2, 0.5, 0.8]), ("XR_FOREARM", 0, [0.3])])
    studies = metrics.study_table(images)
    assert list(studies.columns) == ["study_path", "study_type", "patient", "study", "label", "probability", "n_views"]
    by_path = studies.set_index("study_path")
    humerus = by_path.loc["MURA-v1.1/valid/XR_HUMERUS/patient00000/study1_positive/"]
    assert humerus["probability"] == pytest.approx(0.5)
    assert (humerus["n_views"], humerus["label"], humerus["study_type"]) == (3, 1, "XR_HUMERUS")
    forearm = by_path.loc["MURA-v1.1/valid/XR_FOREARM/patient00001/study1_negative/"]
    assert (forearm["probability"], forearm["n_views"], forearm["label"]) == (pytest.approx(0.3), 1, 0)


def test_study_table_uses_a_given_study_path_without_needing_path():
    images = predictions([("XR_HUMERUS", 1, [0.4, 0.6])])
    images = images.drop(columns="path").assign(study_path="elsewhere/study1/")
    studies = metrics.study_table(images)
    assert studies["study_path"].tolist() == ["elsewhere/study1/"]
    assert studies["probability"].iloc[0] == pytest.approx(0.5)


def test_study_table_refuses_a_study_whose_views_disagree_on_the_label():
    images = predictions([("XR_HUMERUS", 1, [0.4, 0.6])])
    images.loc[1, "label"] = 0
    with pytest.raises(MetricsInputError, match="different labels"):
        metrics.study_table(images)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(columns=["probability"]), "probability"),
        (lambda t: t.drop(columns=["path"]), "path"),
        (lambda t: t.assign(probability=1.5), r"\[0, 1\]"),
        (lambda t: t.assign(probability=np.nan), r"\[0, 1\]"),
        (lambda t: t.assign(label=2), "0 \\(normal\\) or 1"),
    ],
)
def test_bad_tables_are_refused_with_a_message_that_says_what_is_wrong(change, message):
    images = predictions([("XR_HUMERUS", 1, [0.4])])
    with pytest.raises(MetricsInputError, match=message):
        metrics.study_table(change(images))


# --- curves and operating points ----------------------------------------------------------------


def test_perfectly_separable_scores_give_auc_one_and_kappa_one():
    labels = [0, 0, 0, 1, 1]
    probabilities = [0.1, 0.2, 0.3, 0.7, 0.9]
    assert metrics.roc_curve_points(labels, probabilities).auc == 1.0
    assert metrics.pr_curve_points(labels, probabilities).average_precision == 1.0
    confusion = metrics.confusion_at(labels, probabilities, 0.5)
    assert (confusion.tn, confusion.fp, confusion.fn, confusion.tp) == (3, 0, 0, 2)
    assert (confusion.sensitivity, confusion.specificity, confusion.kappa, confusion.accuracy) == (1, 1, 1, 1)


def test_curves_are_sklearns():
    images = random_predictions(80, seed=3)
    labels, probabilities = images["label"], images["probability"]
    roc = metrics.roc_curve_points(labels, probabilities)
    assert roc.auc == pytest.approx(roc_auc_score(labels, probabilities))
    assert roc.fpr[0] == 0 and roc.tpr[-1] == 1 and np.isinf(roc.thresholds[0])
    pr = metrics.pr_curve_points(labels, probabilities)
    assert len(pr.precision) == len(pr.recall) == len(pr.thresholds) + 1


def test_confusion_counts_and_kappa_by_hand():
    # Called abnormal: the 0.9 and the 0.5 (threshold inclusive).
    # tp=1, fn=1, fp=1, tn=3; observed agreement 4/6, chance agreement (2*2 + 4*4)/36 = 5/9,
    # kappa = (2/3 - 5/9) / (1 - 5/9) = 1/4.
    labels = [1, 1, 0, 0, 0, 0]
    probabilities = [0.9, 0.2, 0.5, 0.1, 0.3, 0.4]
    confusion = metrics.confusion_at(labels, probabilities, 0.5)
    assert (confusion.tn, confusion.fp, confusion.fn, confusion.tp) == (3, 1, 1, 1)
    assert confusion.sensitivity == pytest.approx(1 / 2)
    assert confusion.specificity == pytest.approx(3 / 4)
    assert confusion.accuracy == pytest.approx(4 / 6)
    assert confusion.kappa == pytest.approx(1 / 4)
    assert confusion.n == 6


def test_per_type_thresholds_apply_to_their_own_rows():
    images = predictions(
        [
            ("XR_HUMERUS", 1, [0.45]),
            ("XR_HUMERUS", 0, [0.35]),
            ("XR_FOREARM", 1, [0.65]),
            ("XR_FOREARM", 0, [0.45]),
        ]
    )
    by_type = metrics.confusion_by_type(images, {"XR_HUMERUS": 0.4, "XR_FOREARM": 0.6})
    assert set(by_type) == {"overall", "XR_HUMERUS", "XR_FOREARM"}
    for study_type in ("XR_HUMERUS", "XR_FOREARM"):
        assert (by_type[study_type].tp, by_type[study_type].tn) == (1, 1)
        assert (by_type[study_type].fp, by_type[study_type].fn) == (0, 0)
    assert (by_type["overall"].tp, by_type["overall"].tn, by_type["overall"].kappa) == (2, 2, 1.0)
    # One threshold of 0.5 for both would misjudge the humerus abnormal and nothing else.
    single = metrics.confusion_by_type(images, 0.5)["overall"]
    assert (single.tp, single.fn, single.tn, single.fp) == (1, 1, 2, 0)


def test_thresholds_need_every_type_or_a_default():
    images = predictions([("XR_HUMERUS", 1, [0.45]), ("XR_FOREARM", 0, [0.45])])
    with pytest.raises(MetricsInputError, match="XR_FOREARM"):
        metrics.confusion_by_type(images, {"XR_HUMERUS": 0.4})
    per_row = metrics.row_thresholds(images, {"XR_HUMERUS": 0.4, metrics.DEFAULT_THRESHOLD_KEY: 0.7})
    assert per_row.tolist() == [0.4, 0.7]


# --- bootstrap ----------------------------------------------------------------------------------


def _auroc(table: pd.DataFrame) -> float:
    return roc_auc_score(table["label"].to_numpy(), table["probability"].to_numpy())


def test_bootstrap_is_reproducible_with_a_seed_and_contains_the_point():
    images = random_predictions(60, seed=1)
    first = metrics.bootstrap_ci(images, _auroc, n_boot=100, seed=7)
    again = metrics.bootstrap_ci(images, _auroc, n_boot=100, seed=7)
    other = metrics.bootstrap_ci(images, _auroc, n_boot=100, seed=8)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    point, low, high = first
    assert point == pytest.approx(_auroc(metrics.study_table(images)))
    assert low < point < high
    assert (first.n_boot, first.n_skipped) == (100, 0)


def test_image_level_bootstrap_keeps_the_views_of_a_study_together():
    images = random_predictions(30, seed=2)
    views_per_study = metrics.study_table(images).set_index("study_path")["n_views"]
    seen = []

    def views_are_whole_studies(table: pd.DataFrame) -> float:
        counts = table["study_path"].value_counts()
        seen.append(bool((counts % views_per_study[counts.index] == 0).all()))
        return len(table)

    result = metrics.bootstrap_ci(images, views_are_whole_studies, n_boot=50, level="image")
    assert len(seen) == 51 and all(seen)  # the point estimate and every resample
    assert result.point == len(images)


def test_study_level_bootstrap_sees_study_rows():
    images = random_predictions(20, seed=4)
    result = metrics.bootstrap_ci(images, lambda table: table["n_views"].size, n_boot=20, level="study")
    assert result.point == result.low == result.high == 20


def test_bootstrap_skips_and_counts_single_class_resamples():
    images = predictions([("XR_HUMERUS", 1, [0.8, 0.6]), ("XR_HUMERUS", 0, [0.3])])

    def both_classes_auroc(table: pd.DataFrame) -> float:
        assert table["label"].nunique() == 2
        return _auroc(table)

    result = metrics.bootstrap_ci(images, both_classes_auroc, n_boot=200, level="image")
    # Two studies: a resample holds both with probability 1/2.
    assert 60 < result.n_skipped < 140
    assert result.point == result.low == result.high == 1.0


def test_bootstrap_of_a_single_class_table_is_undefined_not_a_crash():
    images = predictions([("XR_HUMERUS", 0, [0.3]), ("XR_HUMERUS", 0, [0.2])])
    result = metrics.bootstrap_ci(images, lambda table: metrics.roc_curve_points(table.label, table.probability).auc)
    assert tuple(result) == (None, None, None)
    assert result.n_skipped == result.n_boot


def test_bootstrap_cis_share_resamples_and_refuse_unknown_levels():
    images = random_predictions(40, seed=5)
    intervals = metrics.bootstrap_cis(
        images, {"auroc": _auroc, "n": lambda table: float(len(table))}, n_boot=100, seed=3, level="image"
    )
    assert intervals["auroc"] == metrics.bootstrap_ci(images, _auroc, n_boot=100, seed=3, level="image")
    assert intervals["n"].point == len(images)
    with pytest.raises(MetricsInputError, match="level"):
        metrics.bootstrap_ci(images, _auroc, level="patient")


# --- calibration --------------------------------------------------------------------------------


def test_calibration_of_exactly_calibrated_bins_is_zero():
    # Bin 0.2-0.3: predicted 0.25, one positive in four; bin 0.7-0.8: predicted 0.75, three in four.
    labels = [1, 0, 0, 0, 1, 1, 1, 0]
    probabilities = [0.25] * 4 + [0.75] * 4
    bins, ece = metrics.calibration(labels, probabilities, n_bins=10)
    assert bins["count"].tolist() == [4, 4]
    assert bins["fraction_positive"].tolist() == pytest.approx([0.25, 0.75])
    assert bins["bin_low"].tolist() == pytest.approx([0.2, 0.7])
    assert ece == pytest.approx(0.0)


def test_calibration_of_an_overconfident_model_is_its_gap():
    # Always 0.9, right half the time: ECE = |0.5 - 0.9|.
    bins, ece = metrics.calibration([1, 0] * 10, [0.9] * 20)
    assert len(bins) == 1
    assert ece == pytest.approx(0.4)


def test_calibration_separates_calibrated_from_miscalibrated_scores():
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(size=20_000)
    labels = (rng.uniform(size=probabilities.size) < probabilities).astype(int)
    bins, calibrated_ece = metrics.calibration(labels, probabilities)
    _, squashed_ece = metrics.calibration(labels, probabilities**4)
    assert bins["count"].sum() == probabilities.size
    assert calibrated_ece < 0.02
    assert squashed_ece > 0.15


# --- degenerate input ---------------------------------------------------------------------------


def test_empty_input_gives_empty_tables_and_undefined_rates():
    images = predictions([])
    studies = metrics.study_table(images)
    assert studies.empty and "n_views" in studies.columns
    confusion = metrics.confusion_at([], [], 0.5)
    assert confusion.n == 0
    assert (confusion.sensitivity, confusion.specificity, confusion.kappa, confusion.accuracy) == (None,) * 4
    bins, ece = metrics.calibration([], [])
    assert bins.empty and ece is None


def test_single_class_input_has_no_auc_and_no_kappa():
    roc = metrics.roc_curve_points([1, 1], [0.6, 0.7])
    assert roc.auc is None and roc.fpr.size == 0
    assert metrics.pr_curve_points([0, 0], [0.2, 0.7]).average_precision is None
    confusion = metrics.confusion_at([1, 1], [0.6, 0.7], 0.5)
    assert (confusion.tp, confusion.kappa, confusion.sensitivity, confusion.specificity) == (2, None, 1.0, None)


# --- summary ------------------------------------------------------------------------------------


def test_summarise_is_strict_json_and_consistent_with_its_parts():
    images = random_predictions(40, seed=6)
    thresholds = {"XR_HUMERUS": 0.45, "XR_FOREARM": 0.55}
    summary = metrics.summarise(images, thresholds, n_boot=50, seed=0)
    decoded = json.loads(json.dumps(summary, allow_nan=False))
    assert decoded["thresholds"] == thresholds
    studies = metrics.study_table(images)
    for level, table in (("image", images), ("study", studies)):
        groups = decoded[level]
        assert list(groups) == ["overall", "XR_FOREARM", "XR_HUMERUS"]
        overall = groups["overall"]
        assert (overall["n"], overall["n_abnormal"], overall["n_studies"]) == (len(table), table["label"].sum(), 40)
        assert overall["auroc"]["point"] == pytest.approx(roc_auc_score(table["label"], table["probability"]))
        assert overall["auroc"]["low"] <= overall["auroc"]["point"] <= overall["auroc"]["high"]
        for field in ("tn", "fp", "fn", "tp"):
            assert overall["confusion"][field] == sum(groups[t]["confusion"][field] for t in thresholds)
        humerus = table[table["study_type"] == "XR_HUMERUS"]
        predicted = (humerus["probability"] >= 0.45).astype(int)
        assert groups["XR_HUMERUS"]["kappa"]["point"] == pytest.approx(cohen_kappa_score(humerus["label"], predicted))
        assert groups["XR_HUMERUS"]["threshold"] == 0.45 and overall["threshold"] is None


def test_summarise_degenerate_tables_give_none_not_nan():
    for images in (predictions([]), predictions([("XR_HUMERUS", 1, [0.7, 0.2]), ("XR_HUMERUS", 1, [0.9])])):
        summary = metrics.summarise(images, 0.5, n_boot=20)
        text = json.dumps(summary, allow_nan=False)
        overall = json.loads(text)["study"]["overall"]
        assert overall["auroc"] == {"point": None, "low": None, "high": None, "n_skipped": 20}
        assert overall["average_precision"] is None
        assert overall["specificity"]["point"] is None


def test_image_level_summary_resamples_groups_whose_images_disagree():
    """FracAtlas stores some radiographs twice with different labels: an image-level summary over
    such groups resamples each group whole instead of refusing it (the study level still refuses)."""
    images = pd.DataFrame(
        {
            "study_type": ["hand"] * 6,
            "patient": ["a", "a", "b", "c", "d", "e"],
            "study": ["a", "a", "b", "c", "d", "e"],
            "study_path": ["a", "a", "b", "c", "d", "e"],
            "label": [1, 0, 1, 0, 1, 0],
            "probability": [0.9, 0.8, 0.7, 0.2, 0.6, 0.4],
        }
    )
    summary = metrics.summarise(images, {"hand": 0.5}, n_boot=20, levels=("image",))
    assert set(summary) >= {"image"} and "study" not in summary
    assert summary["image"]["overall"]["n"] == 6 and summary["image"]["overall"]["n_studies"] == 5
    with pytest.raises(MetricsInputError, match="different labels"):
        metrics.summarise(images, {"hand": 0.5}, n_boot=20)


def test_summarise_trained_pools_only_the_body_parts_the_card_names() -> None:
    images = pd.concat([random_predictions(40, seed=3), random_predictions(4, seed=4, types=("XR_ELBOW",))])
    thresholds = {"XR_HUMERUS": 0.4, "XR_FOREARM": 0.6, "XR_ELBOW": 0.5}
    card = {"training_data": {"all": {"XR_HUMERUS": {}, "XR_FOREARM": {}}}}
    pooled = summarise_trained(images, thresholds, card, n_boot=20)
    trained = images[images["study_type"] != "XR_ELBOW"]
    assert pooled["study_types"] == ["XR_FOREARM", "XR_HUMERUS"]
    expected = metrics.summarise(trained, thresholds, n_boot=20)
    assert pooled["study"] == expected["study"]["overall"] and pooled["image"] == expected["image"]["overall"]
    assert pooled["study"]["n"] < metrics.summarise(images, thresholds, n_boot=20)["study"]["overall"]["n"]
    assert summarise_trained(images[images["study_type"] == "XR_ELBOW"], thresholds, card) is None


def test_one_n_boot_flag_for_every_bootstrapping_cli() -> None:
    """--n-boot everywhere (evaluate, compare, localize, trust), --bootstrap still read as the same value."""
    import argparse
    import inspect

    from core import compare, evaluate, localize, trust
    from core.cli import add_n_boot_argument

    parser = argparse.ArgumentParser()
    add_n_boot_argument(parser)
    assert parser.parse_args([]).n_boot == metrics.DEFAULT_N_BOOT
    assert parser.parse_args(["--n-boot", "7"]).n_boot == 7 == parser.parse_args(["--bootstrap", "7"]).n_boot
    for module in (compare, evaluate, localize, trust):
        assert "add_n_boot_argument(parser)" in inspect.getsource(module.main), module.__name__


@pytest.mark.slow  # a fresh interpreter
def test_metrics_loads_neither_the_card_module_nor_torch():
    """The metrics library is numpy/pandas/sklearn only; the card module brings torch with it."""
    code = "import sys, core.eval.metrics; print(sorted({'torch', 'core.model.card'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.stdout.strip() == "[]"


def test_the_default_threshold_key_is_the_cards():
    assert metrics.DEFAULT_THRESHOLD_KEY == card.DEFAULT_THRESHOLD_KEY


def test_bootstrap_means_draws_whole_groups():
    """Nine copies of one radiograph (hit) and one other (miss): drawn by group, half the resamples hold
    only the miss, so the interval reaches 0; drawn by row, a resample of ten misses is all but impossible."""
    values = np.array([1.0] * 9 + [0.0])
    by_group = metrics.bootstrap_means(values, names=["hit"], n_boot=500, groups=["copy"] * 9 + ["other"])["hit"]
    by_row = metrics.bootstrap_means(values, names=["hit"], n_boot=500)["hit"]
    assert by_group.point == pytest.approx(0.9) == by_row.point
    assert by_group.low == pytest.approx(0.0) and by_group.high == pytest.approx(1.0)
    assert by_row.low > 0.5
    with pytest.raises(metrics.MetricsInputError, match="groups has 2 keys for 10 rows"):
        metrics.bootstrap_means(values, names=["hit"], groups=["a", "b"])


def test_bootstrap_means_without_groups_draws_rows_as_before():
    """One seeded generator, every row index up front: the intervals other caches were summarised with."""
    values = np.random.default_rng(1).random((30, 2))
    values[3, 1] = np.nan
    intervals = metrics.bootstrap_means(values, names=["x", "y"], n_boot=200, seed=4)
    draws = np.random.default_rng(4).integers(0, 30, size=(200, 30))
    for column, name in enumerate(("x", "y")):
        means = np.nanmean(values[draws][:, :, column], axis=1)
        assert (intervals[name].low, intervals[name].high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
