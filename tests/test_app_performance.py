"""Performance page (AppTest): it runs, and every control changes the counts to exactly what
core.eval.metrics computes from the cached predictions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.eval import metrics
from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import SHIPPED_WEIGHTS_DIR
from dashboard.charts import OVERALL, TOO_FEW, group_label, too_few
from dashboard.evaluation import trained_pool_metrics
from tests.app_pages import open_page

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

PAGE = "../pages/performance.py"
MODE_KEY = f"performance:threshold_mode:{DEFAULT_MODEL}"


def _slider_key(group: str, page: str = "performance") -> str:
    return f"{page}:threshold:{DEFAULT_MODEL}:{group}"


def _live_table(app: AppTest) -> pd.DataFrame:
    """The 'at your thresholds' table: the one with confusion counts, indexed by body-part label."""
    (table,) = [frame.value for frame in app.dataframe if "TP" in frame.value.columns]
    return table.set_index("Body part")


def _counts(confusion: metrics.Confusion) -> dict[str, int]:
    return {"TP": confusion.tp, "FP": confusion.fp, "FN": confusion.fn, "TN": confusion.tn}


def _assert_counts(app: AppTest, expected: dict[str, metrics.Confusion]) -> None:
    table = _live_table(app)
    assert set(table.index) == {group_label(group) for group in expected}
    for group, confusion in expected.items():
        row = table.loc[group_label(group)]
        assert {name: int(row[name]) for name in ("TP", "FP", "FN", "TN")} == _counts(confusion), group
        if too_few(confusion.n, confusion.tp + confusion.fn):
            assert row["Kappa"] == TOO_FEW, group
        elif confusion.kappa is not None:  # text since issue 13.7: "—" for undefined, never "None"
            assert float(row["Kappa"]) == pytest.approx(confusion.kappa, abs=5e-4)


@pytest.fixture
def predictions(use_scratch_weights: Path) -> pd.DataFrame:
    return pd.read_csv(use_scratch_weights / DEFAULT_MODEL / "predictions_valid.csv")


@pytest.fixture
def card_thresholds(use_scratch_weights: Path) -> dict[str, float]:
    return json.loads((use_scratch_weights / DEFAULT_MODEL / "model_card.json").read_text())["thresholds"]


def _assert_counts_match_cached_metrics(app: AppTest, cached: dict, level: str) -> None:
    """At the card's thresholds the live counts are those core.evaluate wrote to metrics_valid.json."""
    table = _live_table(app)
    trained = trained_pool_metrics(cached, ["XR_FOREARM", "XR_HUMERUS"])  # the page pools the trained parts only
    assert set(table.index) == {group_label(group) for group in trained[level]}
    for group, summary in trained[level].items():
        row = table.loc[group_label(group)]
        assert {name.lower(): int(row[name]) for name in ("TP", "FP", "FN", "TN")} == summary["confusion"], group


def test_page_opens_at_the_model_card_thresholds(predictions, card_thresholds, use_scratch_weights) -> None:
    app = open_page(PAGE)
    studies = metrics.study_table(predictions)
    _assert_counts(app, metrics.confusion_by_type(studies, card_thresholds))
    cached = json.loads((use_scratch_weights / DEFAULT_MODEL / "metrics_valid.json").read_text())
    _assert_counts_match_cached_metrics(app, cached, "study")
    assert len(app.get("plotly_chart")) >= 4  # confusion matrices, ROC, PR, calibration
    cached = [frame.value for frame in app.dataframe if "AUROC" in frame.value.columns]
    assert cached and set(cached[0]["Matches yours"]) == {"yes"}


def test_global_threshold_slider_sets_counts_from_core_metrics(predictions, card_thresholds) -> None:
    app = open_page(PAGE)
    studies = metrics.study_table(predictions)
    app.radio(key=MODE_KEY).set_value("global").run()
    app.slider(key=_slider_key("global")).set_value(0.3).run()
    assert not app.exception
    expected = metrics.confusion_by_type(studies, 0.3)
    assert expected != metrics.confusion_by_type(studies, card_thresholds)  # the move is visible
    _assert_counts(app, expected)
    cached = [frame.value for frame in app.dataframe if "AUROC" in frame.value.columns][0]
    assert set(cached["Matches yours"]) == {"no"}


def test_one_body_part_slider_moves_only_that_body_part(predictions, card_thresholds) -> None:
    app = open_page(PAGE)
    studies = metrics.study_table(predictions)
    app.slider(key=_slider_key("XR_HUMERUS")).set_value(0.7).run()
    moved = {**card_thresholds, "XR_HUMERUS": 0.7}
    expected = metrics.confusion_by_type(studies, moved)
    before = metrics.confusion_by_type(studies, card_thresholds)
    assert expected["XR_HUMERUS"] != before["XR_HUMERUS"]
    assert expected["XR_FOREARM"] == before["XR_FOREARM"]
    _assert_counts(app, expected)


def test_reset_returns_to_the_model_card_thresholds(predictions, card_thresholds) -> None:
    app = open_page(PAGE)
    app.slider(key=_slider_key("XR_HUMERUS")).set_value(0.7).run()
    (reset,) = [button for button in app.button if button.label.startswith("Reset")]
    reset.click().run()
    assert app.slider(key=_slider_key("XR_HUMERUS")).value == pytest.approx(card_thresholds["XR_HUMERUS"])
    _assert_counts(app, metrics.confusion_by_type(metrics.study_table(predictions), card_thresholds))


def test_reset_also_leaves_one_threshold_for_all(predictions, card_thresholds) -> None:
    app = open_page(PAGE)
    app.radio(key=MODE_KEY).set_value("global").run()
    app.slider(key=_slider_key("global")).set_value(0.8).run()
    next(button for button in app.button if button.label.startswith("Reset")).click().run()
    assert app.radio(key=MODE_KEY).value == "per body part"
    _assert_counts(app, metrics.confusion_by_type(metrics.study_table(predictions), card_thresholds))


def test_image_level_toggle_counts_images(predictions, card_thresholds) -> None:
    app = open_page(PAGE)
    app.radio(key="evaluation_level").set_value("image").run()
    assert not app.exception
    expected = metrics.confusion_by_type(predictions, card_thresholds)
    assert expected[OVERALL].n == len(predictions) != metrics.study_table(predictions).shape[0]
    _assert_counts(app, expected)
    assert int(_live_table(app).loc[group_label(OVERALL), "Images"]) == len(predictions)


def test_bootstrap_toggle_adds_intervals_around_the_live_values(predictions, card_thresholds) -> None:
    app = open_page(PAGE)
    app.toggle(key="performance_bootstrap").set_value(True).run()
    assert not app.exception
    kappa = metrics.confusion_by_type(metrics.study_table(predictions), card_thresholds)[OVERALL].kappa
    text = _live_table(app).loc[group_label(OVERALL), "Kappa"]
    assert text.startswith(f"{kappa:.3f} (") and "–" in text


def test_thresholds_survive_a_visit_to_another_page(use_scratch_weights) -> None:
    app = open_page(PAGE)
    app.slider(key=_slider_key("XR_FOREARM")).set_value(0.2).run()
    app.switch_page("../pages/model_card.py").run()
    app.switch_page(PAGE).run()
    assert app.slider(key=_slider_key("XR_FOREARM")).value == pytest.approx(0.2)


def test_thresholds_are_shared_with_error_analysis(card_thresholds) -> None:
    app = open_page(PAGE)
    app.slider(key=_slider_key("XR_HUMERUS")).set_value(0.7).run()
    app.switch_page("../pages/error_analysis.py").run()
    assert not app.exception
    assert app.slider(key=_slider_key("XR_HUMERUS", "error")).value == pytest.approx(0.7)
    app.slider(key=_slider_key("XR_HUMERUS", "error")).set_value(0.25).run()
    app.switch_page(PAGE).run()
    assert app.slider(key=_slider_key("XR_HUMERUS")).value == pytest.approx(0.25)
    assert app.slider(key=_slider_key("XR_FOREARM")).value == pytest.approx(card_thresholds["XR_FOREARM"])


def test_pages_run_on_the_shipped_model(monkeypatch) -> None:
    """The shipped weights/ folder (card, log, cached evaluation) renders on every page of B's."""
    shipped = SHIPPED_WEIGHTS_DIR / DEFAULT_MODEL
    if not (shipped / "metrics_valid.json").is_file():
        pytest.skip(f"no cached evaluation in {shipped} (run make evaluate)")
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("MURA_ROOT", raising=False)
    app = open_page(PAGE)
    _assert_counts_match_cached_metrics(app, json.loads((shipped / "metrics_valid.json").read_text()), "study")
    app.radio(key="evaluation_level").set_value("image").run()
    _assert_counts_match_cached_metrics(app, json.loads((shipped / "metrics_valid.json").read_text()), "image")
    for page in ("../pages/error_analysis.py", "../pages/model_card.py"):
        app.switch_page(page).run()
        assert not app.exception, [e.value for e in app.exception]


def test_page_without_cached_evaluation_says_how_to_make_it(use_scratch_weights, tmp_path, monkeypatch) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(use_scratch_weights, weights)
    (weights / DEFAULT_MODEL / "predictions_valid.csv").unlink()
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    app = open_page(PAGE)
    assert any("make evaluate" in info.value for info in app.info)
