"""dashboard.charts: the figures show exactly the numbers core.eval.metrics computes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from core.eval.metrics import calibration, confusion_at, pr_curve_points, roc_curve_points
from dashboard import charts


@pytest.fixture(scope="module")
def groups() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labels and informative probabilities for two body parts and their pool."""
    rng = np.random.default_rng(7)
    result = {}
    for study_type, n in (("XR_FOREARM", 60), ("XR_HUMERUS", 50)):
        labels = rng.integers(0, 2, n)
        probabilities = np.clip(0.3 * labels + rng.uniform(0, 0.7, n), 0, 1)
        result[study_type] = (labels, probabilities)
    result[charts.OVERALL] = tuple(np.concatenate(parts) for parts in zip(*result.values(), strict=True))
    return result


def _traces(figure, name_part: str) -> list:
    return [trace for trace in figure.data if trace.name and name_part in trace.name]


def test_group_label_and_interval_text() -> None:
    assert charts.group_label("XR_HUMERUS") == "Humerus"
    assert charts.group_label(charts.OVERALL) == "All trained body parts"  # one headline pool (issue 27)
    assert charts.group_label(charts.OVERALL, charts.UPPER_LIMB_POOL) == "All upper-limb images"
    assert charts.format_interval({"point": 0.81234, "low": 0.75, "high": 0.866}) == "0.812 (0.750–0.866)"
    assert charts.format_interval({"point": 0.5, "low": None, "high": None}, digits=2) == "0.50"
    assert charts.format_interval(None) == "—"
    assert charts.format_interval({"point": None, "low": None, "high": None}) == "—"


def test_roc_figure_legend_curves_and_operating_points(groups) -> None:
    curves = {g: roc_curve_points(*groups[g]) for g in groups}
    confusions = {g: confusion_at(*groups[g], 0.5) for g in groups}
    intervals = {"XR_HUMERUS": {"point": curves["XR_HUMERUS"].auc, "low": 0.6, "high": 0.9}}
    figure = charts.roc_figure(curves, confusions, {g: 0.5 for g in groups}, intervals)

    humerus = _traces(figure, "Humerus · AUC")
    assert len(humerus) == 1
    expected_auc = roc_auc_score(*groups["XR_HUMERUS"])
    assert humerus[0].name == f"Humerus · AUC {expected_auc:.3f} (0.600–0.900)"
    np.testing.assert_allclose(humerus[0].x, curves["XR_HUMERUS"].fpr)
    np.testing.assert_allclose(humerus[0].y, curves["XR_HUMERUS"].tpr)
    assert _traces(figure, "Forearm · AUC")[0].name == f"Forearm · AUC {roc_auc_score(*groups['XR_FOREARM']):.3f}"

    for group, confusion in confusions.items():
        (marker,) = _traces(figure, f"{charts.group_label(group)} operating point")
        assert marker.x[0] == pytest.approx(1 - confusion.specificity)
        assert marker.y[0] == pytest.approx(confusion.sensitivity)
        assert marker.legendgroup == group
    figure.to_json()


def test_pr_figure_average_precision_and_operating_point(groups) -> None:
    curves = {g: pr_curve_points(*groups[g]) for g in groups}
    confusions = {g: confusion_at(*groups[g], 0.6) for g in groups}
    figure = charts.pr_figure(curves, confusions, {g: None for g in groups})

    (overall,) = _traces(figure, "All trained body parts · AP")
    assert overall.name.endswith(f"{average_precision_score(*groups[charts.OVERALL]):.3f}")
    (marker,) = _traces(figure, "All trained body parts operating point")
    confusion = confusions[charts.OVERALL]
    assert marker.x[0] == pytest.approx(confusion.sensitivity)
    assert marker.y[0] == pytest.approx(confusion.tp / (confusion.tp + confusion.fp))
    assert "each body part at its own threshold" in marker.hovertemplate
    (prevalence,) = _traces(figure, "All trained body parts prevalence")
    assert prevalence.y[0] == pytest.approx(groups[charts.OVERALL][0].mean())


def test_operating_points_only_for_drawn_curves(groups) -> None:
    drawn = {"XR_HUMERUS": roc_curve_points(*groups["XR_HUMERUS"])}
    confusions = {g: confusion_at(*groups[g], 0.5) for g in groups}
    figure = charts.roc_figure(drawn, confusions, {g: 0.5 for g in groups})
    assert [trace.name for trace in figure.data if "operating point" in trace.name] == ["Humerus operating point"]


def test_curves_skip_groups_with_one_class() -> None:
    labels, probabilities = np.zeros(5, dtype=int), np.linspace(0.1, 0.9, 5)
    figure = charts.roc_figure(
        {"XR_HUMERUS": roc_curve_points(labels, probabilities)},
        {"XR_HUMERUS": confusion_at(labels, probabilities, 0.5)},
        {"XR_HUMERUS": 0.5},
    )
    assert not _traces(figure, "AUC")
    assert not _traces(figure, "operating point")  # sensitivity is undefined without abnormal cases


def test_confusion_figure_cells_and_selection_marker(groups) -> None:
    confusion = confusion_at(*groups["XR_FOREARM"], 0.55)
    figure = charts.confusion_figure(confusion, selected="FN")
    heatmap, cells = figure.data
    counts = {"TN": confusion.tn, "FP": confusion.fp, "FN": confusion.fn, "TP": confusion.tp}
    texts = {text.split("</b>")[0].removeprefix("<b>"): text for row in heatmap.text for text in row}
    for name, count in counts.items():
        assert f"<br>{count}<br>" in texts[name]
    positions = dict(zip(cells.customdata, zip(cells.x, cells.y, strict=True), strict=True))
    # (called, truth): columns are the model's call, rows the truth.
    assert positions["TN"] == ("Normal", "Normal")
    assert positions["FP"] == ("Abnormal", "Normal")
    assert positions["FN"] == ("Normal", "Abnormal")
    assert positions["TP"] == ("Abnormal", "Abnormal")
    assert figure.layout.xaxis.title.text == "Called by the model" and figure.layout.yaxis.title.text == "Truth"
    (outline,) = figure.layout.shapes
    assert (outline.x0 + outline.x1) / 2 == 0 and (outline.y0 + outline.y1) / 2 == 1  # FN: column 0, row 1
    assert not charts.confusion_figure(confusion).layout.shapes


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"selection": {"points": [{"customdata": "FP", "x": "Abnormal"}]}}, "FP"),
        ({"selection": {"points": [{"customdata": ["TN"]}]}}, "TN"),
        ({"selection": {"points": [{"customdata": "nonsense"}, {"customdata": "TP"}]}}, "TP"),
        ({"selection": {"points": [], "box": [], "lasso": []}}, None),
        (None, None),
        # Crafted by the browser: nothing of this may stop the page.
        ({"selection": {"points": [{"customdata": {"a": 1}}, {"customdata": [["TP"]]}, "TP", 7]}}, None),
        ({"selection": {"points": {"customdata": "TP"}}}, None),
        ({"selection": ["TP"]}, None),
        (["selection"], None),
        ("TP", None),
    ],
)
def test_selected_cell_reads_plotly_events(event, expected) -> None:
    assert charts.selected_cell(event) == expected


def test_reliability_figure_shows_ece_and_counts(groups) -> None:
    bins = {g: calibration(*groups[g], n_bins=5) for g in ("XR_HUMERUS", charts.OVERALL)}
    figure = charts.reliability_figure(bins)
    table, ece = bins["XR_HUMERUS"]
    (curve,) = _traces(figure, "Humerus · ECE")
    assert curve.name == f"Humerus · ECE {ece:.3f}"
    np.testing.assert_allclose(curve.y, table["fraction_positive"])
    (bars,) = _traces(figure, "Humerus count")
    assert int(np.sum(bars.y)) == len(groups["XR_HUMERUS"][0])


def test_training_curves_split_losses_from_scores() -> None:
    log = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [0.7, 0.5, 0.4],
            "holdout_study_auroc": [0.7, 0.8, 0.78],
            "lr": [1e-3, 5e-4, 1e-4],
            "seconds": [10.0, 11.0, 9.0],
        }
    )
    figure = charts.training_curves_figure(log, kept_epochs=[2])
    names = {trace.name: trace for trace in figure.data}
    assert set(names) == {"train loss", "holdout study auroc"}
    assert names["train loss"].xaxis == "x" and names["holdout study auroc"].xaxis == "x2"
    assert [shape.x0 for shape in figure.layout.shapes] == [2, 2]


def test_training_curves_of_an_ensemble_have_one_line_per_member() -> None:
    one_run = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.6, 0.5], "holdout_study_auroc": [0.7, 0.8]})
    log = pd.concat([one_run.assign(member=0), one_run.assign(member=1, train_loss=[0.65, 0.45])])
    figure = charts.training_curves_figure(log, kept_epochs=[2, 1])
    losses = {trace.hovertemplate.split("<br>")[0]: list(trace.y) for trace in figure.data if "loss" in trace.name}
    assert losses == {"train loss · member 0": [0.6, 0.5], "train loss · member 1": [0.65, 0.45]}
    # One legend entry per metric, not per metric and member (a four-member ensemble had twelve).
    assert [trace.name for trace in figure.data if trace.showlegend] == ["train loss", "holdout study auroc"]
    assert sorted(shape.x0 for shape in figure.layout.shapes) == [1, 1, 2, 2]
    assert {a.text for a in figure.layout.annotations} >= {"kept: epoch 2 (member 0)", "kept: epoch 1 (member 1)"}
