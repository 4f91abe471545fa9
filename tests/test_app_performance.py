"""Performance page (AppTest): it runs, and every control changes the counts to exactly what
core.metrics computes from the cached predictions."""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.runtime.scriptrunner import script_runner
from streamlit.testing.v1 import AppTest

from core import metrics
from core.models import DEFAULT_MODEL
from dashboard.charts import OVERALL, group_label

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
PAGE = "../pages/performance.py"
MODE_KEY = f"threshold_mode:{DEFAULT_MODEL}"


def _slider_key(group: str) -> str:
    return f"threshold:{DEFAULT_MODEL}:{group}"


def _open_page() -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    app.switch_page(PAGE).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


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
        if confusion.kappa is not None:
            assert row["Kappa"] == pytest.approx(confusion.kappa)


@pytest.fixture
def predictions(use_scratch_weights: Path) -> pd.DataFrame:
    return pd.read_csv(use_scratch_weights / DEFAULT_MODEL / "predictions_valid.csv")


@pytest.fixture
def card_thresholds(use_scratch_weights: Path) -> dict[str, float]:
    import json

    return json.loads((use_scratch_weights / DEFAULT_MODEL / "model_card.json").read_text())["thresholds"]


def test_page_opens_at_the_model_card_thresholds(predictions, card_thresholds) -> None:
    app = _open_page()
    studies = metrics.study_table(predictions)
    _assert_counts(app, metrics.confusion_by_type(studies, card_thresholds))
    assert len(app.get("plotly_chart")) >= 4  # confusion matrices, ROC, PR, calibration
    cached = [frame.value for frame in app.dataframe if "AUROC" in frame.value.columns]
    assert cached and set(cached[0]["Same as your thresholds"]) == {"yes"}


def test_global_threshold_slider_sets_counts_from_core_metrics(predictions, card_thresholds) -> None:
    app = _open_page()
    studies = metrics.study_table(predictions)
    app.radio(key=MODE_KEY).set_value("global").run()
    app.slider(key=_slider_key("global")).set_value(0.3).run()
    assert not app.exception
    expected = metrics.confusion_by_type(studies, 0.3)
    assert expected != metrics.confusion_by_type(studies, card_thresholds)  # the move is visible
    _assert_counts(app, expected)
    cached = [frame.value for frame in app.dataframe if "AUROC" in frame.value.columns][0]
    assert set(cached["Same as your thresholds"]) == {"no"}


def test_one_body_part_slider_moves_only_that_body_part(predictions, card_thresholds) -> None:
    app = _open_page()
    studies = metrics.study_table(predictions)
    app.slider(key=_slider_key("XR_HUMERUS")).set_value(0.7).run()
    moved = {**card_thresholds, "XR_HUMERUS": 0.7}
    expected = metrics.confusion_by_type(studies, moved)
    before = metrics.confusion_by_type(studies, card_thresholds)
    assert expected["XR_HUMERUS"] != before["XR_HUMERUS"]
    assert expected["XR_FOREARM"] == before["XR_FOREARM"]
    _assert_counts(app, expected)


def test_image_level_toggle_counts_images(predictions, card_thresholds) -> None:
    app = _open_page()
    app.radio(key="evaluation_level").set_value("image").run()
    assert not app.exception
    expected = metrics.confusion_by_type(predictions, card_thresholds)
    assert expected[OVERALL].n == len(predictions) != metrics.study_table(predictions).shape[0]
    _assert_counts(app, expected)
    assert int(_live_table(app).loc[group_label(OVERALL), "Images"]) == len(predictions)


def test_bootstrap_toggle_adds_intervals_around_the_live_values(predictions, card_thresholds) -> None:
    app = _open_page()
    app.toggle(key="performance_bootstrap").set_value(True).run()
    assert not app.exception
    kappa = metrics.confusion_by_type(metrics.study_table(predictions), card_thresholds)[OVERALL].kappa
    text = _live_table(app).loc[group_label(OVERALL), "Kappa"]
    assert text.startswith(f"{kappa:.3f} (") and "–" in text


def test_thresholds_survive_a_visit_to_another_page(predictions) -> None:
    app = _open_page()
    app.slider(key=_slider_key("XR_FOREARM")).set_value(0.2).run()
    app.switch_page("../pages/model_card.py").run()
    app.switch_page(PAGE).run()
    assert app.slider(key=_slider_key("XR_FOREARM")).value == pytest.approx(0.2)


def test_page_without_cached_evaluation_says_how_to_make_it(use_scratch_weights, tmp_path, monkeypatch) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(use_scratch_weights, weights)
    (weights / DEFAULT_MODEL / "predictions_valid.csv").unlink()
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    app = _open_page()
    assert any("make evaluate" in info.value for info in app.info)


def test_threshold_rerun_is_fast_with_a_warm_cache(use_scratch_weights, monkeypatch) -> None:
    """Target: a threshold change re-renders in < 0.3 s of server time with a warm cache. Server
    time is the script run itself (AppTest's wall time adds its polling); the median of five
    reruns keeps a busy two-core machine from deciding the result. Figures print with pytest -s."""
    script_seconds = []
    run_script = script_runner.exec_func_with_error_handling

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return run_script(*args, **kwargs)
        finally:
            script_seconds.append(time.perf_counter() - started)

    monkeypatch.setattr(script_runner, "exec_func_with_error_handling", timed)
    app = _open_page()
    slider = _slider_key("XR_HUMERUS")
    app.slider(key=slider).set_value(0.6).run()  # warms every cache on this page
    measured = []
    for value in (0.61, 0.62, 0.63, 0.64, 0.65):
        started = time.perf_counter()
        app.slider(key=slider).set_value(value).run()
        measured.append((script_seconds[-1], time.perf_counter() - started))
    assert not app.exception
    server = statistics.median(seconds for seconds, _ in measured)
    print(f"Performance rerun after a threshold change: median {server:.3f} s server time, "
          f"{statistics.median(wall for _, wall in measured):.3f} s AppTest wall time")
    assert server < 0.3
