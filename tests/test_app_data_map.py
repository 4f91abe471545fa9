"""Data map page (AppTest) on a scratch model with a synthetic data-map cache: the map, a selection
listing exactly its studies, the label-issue queue (topped by the planted flip) with its CSV, the
duplicate audit (the planted train-valid copy), and the similar-studies panel on Error analysis."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import BASE_MODEL_KEY
from dashboard import data_map, state
from tests.app_pages import assert_clean, start_app
from tests.data_map_cache import map_weights  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

PAGE = "../pages/data_map.py"
MAP_KEY = "data_map_scatter"  # the chart's key in pages/data_map.py


@pytest.fixture
def use_map_weights(monkeypatch: pytest.MonkeyPatch, map_weights: tuple[Path, dict, str]) -> tuple[Path, dict, str]:  # noqa: F811
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(map_weights[0]))
    monkeypatch.delenv("MURA_ROOT", raising=False)
    return map_weights


def _open(picked: list[int] | None = None) -> AppTest:
    """The page, with map rows ``picked`` as if boxed on the chart (a chart's selection can be set only
    before the chart is first drawn)."""
    at = start_app()
    if picked is not None:
        at.session_state[MAP_KEY] = {
            "selection": {
                "points": [{"customdata": [i]} for i in picked],
                "point_indices": picked,
                "box": [],
                "lasso": [],
            }
        }
    at.switch_page(PAGE).run()
    assert_clean(at)
    return at


def test_page_says_how_to_build_the_cache_when_absent(use_scratch_weights: Path) -> None:
    at = _open()
    assert any("python -m core.embeddings" in info.value for info in at.info)


def test_map_lists_selected_studies_and_the_audit(use_map_weights: tuple[Path, dict, str]) -> None:
    _, summary, flipped = use_map_weights
    table = data_map.map_table(DEFAULT_MODEL)
    picked = [0, 1, len(table) - 1]
    at = _open(picked)
    assert at.title[0].value == "Data map"
    (selected,) = [f.value for f in at.dataframe if "error" in f.value.columns and "views" in f.value.columns]
    assert set(selected["study"]) == set(table.iloc[picked]["study"])
    issues = next(f.value for f in at.dataframe if "label_quality" in f.value.columns)
    train_queue = issues[issues["dataset"] == data_map.DATASET_LABELS["mura_train"]]
    assert train_queue.iloc[0]["study_path"] == flipped  # the planted flip tops train/'s flagged queue
    assert any(
        m.label == "Near-duplicate groups" and m.value == str(summary["duplicates"]["groups"]) for m in at.metric
    )
    assert any(m.label == "train-valid leaks" and m.value == "1" for m in at.metric)


def test_selection_is_fast_on_a_warm_cache(use_map_weights: tuple[Path, dict, str]) -> None:
    table = data_map.map_table(DEFAULT_MODEL)
    at = _open(list(range(0, len(table), 3)))
    times = []
    for _ in range(3):
        began = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - began)
    assert_clean(at)
    assert any(s.value.startswith("Similar") or "studies selected" in s.value for s in at.subheader)
    assert sorted(times)[1] < 2.0  # AppTest adds its own overhead; bench/ measures the server time


def test_similar_studies_show_neighbours_with_labels(use_map_weights: tuple[Path, dict, str]) -> None:
    table = data_map.map_table(DEFAULT_MODEL)
    study = table["study"].iloc[0]
    near = data_map.similar_table(DEFAULT_MODEL, study, k=4)
    assert len(near) == 4 and study not in set(near["study"])
    assert near["distance"].is_monotonic_increasing
    assert {"label_text", "study_probability", "error"} <= set(near.columns)
    at = start_app().switch_page("../pages/error_analysis.py").run()
    assert_clean(at)
    assert any(e.label.startswith("Similar studies") for e in at.expander)


def test_selected_rows_reads_customdata() -> None:
    event = {"selection": {"points": [{"customdata": [3, "s"]}, {"customdata": ["7.0"]}, {"x": 1}]}}
    assert data_map.selected_rows(event, 10) == [3, 7]
    assert data_map.selected_rows(None, 10) == []


@pytest.mark.parametrize(
    "customdata",
    [[-1], [10], [1e300], ["nan"], ["inf"], ["abc"], [2.5], [True], [None], [[3]], [{"row": 3}], "3", 3, []],
)
def test_crafted_customdata_selects_nothing(customdata: object) -> None:
    """The selection event comes from the browser: -1 must not pick the last row, nor text stop the page."""
    event = {"selection": {"points": [{"customdata": customdata}, {"customdata": [4]}]}}
    assert data_map.selected_rows(event, 10) == [4]


@pytest.mark.parametrize("event", [{"selection": {"points": "abc"}}, {"selection": []}, [], "x", 5])
def test_crafted_events_select_nothing(event: object) -> None:
    assert data_map.selected_rows(event, 10) == []


def test_study_summary_puts_confident_errors_first() -> None:
    """Mistakes of either label (MURA's abnormal, a fracture output's fracture) come first, most confident
    first; an image the fracture output trained on is no mistake to list first."""
    rows = pd.DataFrame(
        {
            "study": ["a", "b", "c", "d", "e"],
            "dataset": ["mura_valid"] * 3 + ["fracatlas"] * 2,
            "body_part": "humerus",
            "label_text": ["normal", "abnormal", "normal", "fracture", "no fracture"],
            "output": ["P(abnormal)"] * 3 + ["P(fracture)"] * 2,
            "study_probability": [0.6, 0.1, 0.9, 0.2, 0.99],
            "threshold": [0.5, 0.5, 0.5, 0.868, 0.868],
            "error": ["FP", "FN", "FP", "FN (fracture)", data_map.TRAINED_ON],
            "confidence": [0.6, 0.9, 0.9, 0.8, 0.99],
            "key": ["a/1", "b/1", "c/1", "d", "e"],
        }
    )
    summary = data_map.study_summary(rows)
    assert summary["study"].tolist() == ["b", "c", "d", "a", "e"]
    assert summary["output"].tolist() == ["P(abnormal)", "P(abnormal)", "P(fracture)", "P(abnormal)", "P(fracture)"]
    assert data_map.error_counts(summary["error"]) == (
        f"TP 0 · TN 0 · FP 2 · FN 1 · FN (fracture) 1 · {data_map.TRAINED_ON} 1"
    )


def test_a_model_built_on_a_base_reads_the_bases_data_map(
    map_weights: tuple[Path, dict, str],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model whose card names a base (the fracture model) and has no data-map cache of its own shows the
    base's map, queue and audit, and says on its model card where its MURA path comes from."""
    weights = tmp_path / "weights"
    shutil.copytree(map_weights[0] / DEFAULT_MODEL, weights / DEFAULT_MODEL)
    derived = weights / "derived"
    derived.mkdir()
    for name in ("checkpoint.pt", "predictions_valid.csv", "metrics_valid.json"):
        shutil.copyfile(weights / DEFAULT_MODEL / name, derived / name)
    card = json.loads((weights / DEFAULT_MODEL / "model_card.json").read_text(encoding="utf-8"))
    (derived / "model_card.json").write_text(json.dumps(card | {"name": "derived", BASE_MODEL_KEY: DEFAULT_MODEL}))
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    monkeypatch.delenv("MURA_ROOT", raising=False)
    pd.testing.assert_frame_equal(data_map.map_table("derived"), data_map.map_table(DEFAULT_MODEL))
    assert data_map.read_audit("derived") == data_map.read_audit(DEFAULT_MODEL) is not None
    at = start_app()
    at.session_state[state.MODEL_KEY] = "derived"
    at.switch_page(PAGE).run()
    assert_clean(at)
    assert not any("No data-map cache" in info.value for info in at.info)
    assert any(m.label == "train-valid leaks" and m.value == "1" for m in at.metric)
    at.switch_page("../pages/model_card.py").run()
    assert_clean(at)
    assert any(
        f"MURA path:** {DEFAULT_MODEL}'s own, read from weights/{DEFAULT_MODEL}" in md.value for md in at.markdown
    )
    assert any(h.value == "Training curves" for h in at.subheader)
    assert not any("No training log" in c.value for c in at.caption)
