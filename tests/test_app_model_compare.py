"""Performance's "Compare with another model" (AppTest): both ROC curves, core.compare's paired
bootstrap per body part, and the studies the two models call differently, each openable in Explain.

Runs on the scratch model and a rival beside it (the same studies, other probabilities), over the
scratch MURA root (synthetic pixels; tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.eval import comparison as compare
from core.eval import metrics
from core.eval.metrics import summarise
from core.model.card import card_thresholds
from core.model.checkpoint import DEFAULT_MODEL
from dashboard import model_compare
from dashboard.charts import TOO_FEW, group_label
from dashboard.markup import escape_markdown
from tests.app_pages import assert_clean, start_app

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

PAGE = "../pages/performance.py"
RIVAL = "scratch_rival"


@pytest.fixture
def two_models(monkeypatch: pytest.MonkeyPatch, use_scratch_weights: Path, tmp_path: Path) -> Path:
    """A weights folder with the scratch model and RIVAL: its checkpoint, a card with other
    thresholds, and its own cached evaluation of the same studies (noisier probabilities)."""
    weights = tmp_path / "weights"
    shutil.copytree(use_scratch_weights / DEFAULT_MODEL, weights / DEFAULT_MODEL)
    rival = weights / RIVAL
    rival.mkdir()
    shutil.copy(use_scratch_weights / DEFAULT_MODEL / "checkpoint.pt", rival / "checkpoint.pt")
    card = json.loads((weights / DEFAULT_MODEL / "model_card.json").read_text())
    card |= {"name": RIVAL, "thresholds": {"default": 0.5, "XR_HUMERUS": 0.6, "XR_FOREARM": 0.4}}
    (rival / "model_card.json").write_text(json.dumps(card))
    predictions = pd.read_csv(weights / DEFAULT_MODEL / "predictions_valid.csv")
    noise = np.random.default_rng(5).normal(0.0, 0.25, len(predictions))
    predictions["probability"] = np.round(np.clip(predictions["probability"] + noise, 0.0, 1.0), 6)
    predictions.to_csv(rival / "predictions_valid.csv", index=False)
    per_type = {t: v for t, v in card["thresholds"].items() if t != "default"}
    (rival / "metrics_valid.json").write_text(json.dumps(summarise(predictions, per_type, n_boot=20, seed=0)))
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    return weights


def _compared(at: AppTest) -> AppTest:
    at.selectbox(key=model_compare.OTHER_MODEL_KEY).set_value(RIVAL).run()
    assert_clean(at)
    return at


def _table(at: AppTest, column: str) -> pd.DataFrame:
    (table,) = [frame.value for frame in at.dataframe if column in frame.value.columns]
    return table


def _expected_disagreements(weights: Path) -> set[str]:
    """Studies whose verdicts differ, each model at its own card's thresholds, from the files alone."""
    verdicts = []
    for model in (DEFAULT_MODEL, RIVAL):
        studies = metrics.study_table(pd.read_csv(weights / model / "predictions_valid.csv"))
        thresholds = card_thresholds(json.loads((weights / model / "model_card.json").read_text()))
        verdicts.append(
            pd.Series(
                studies["probability"].to_numpy() >= metrics.row_thresholds(studies, thresholds),
                index=studies["study_path"],
            )
        )
    return set(verdicts[0].index[verdicts[0] != verdicts[1]])


def test_a_single_model_hides_the_comparison_with_a_note(use_scratch_weights: Path) -> None:
    at = start_app().switch_page(PAGE).run()
    assert_clean(at)
    assert any(c.value.startswith("Only one model is installed") for c in at.caption)
    assert not [box for box in at.selectbox if box.key == model_compare.OTHER_MODEL_KEY]


def test_second_model_shows_both_rocs_the_paired_differences_and_the_disagreements(two_models: Path) -> None:
    at = _compared(start_app().switch_page(PAGE).run())
    curves = [
        [trace.get("name", "").split(" · AUC ")[0] for trace in json.loads(chart.proto.spec)["data"]]
        for chart in at.get("plotly_chart")
    ]
    assert [DEFAULT_MODEL, RIVAL] in [[name for name in names if name in (DEFAULT_MODEL, RIVAL)] for names in curves]

    # The page's table is core.compare's report of the same two files, to the last digit.
    report = compare.compare_models(DEFAULT_MODEL, RIVAL, directory=two_models)
    shown = _table(at, "Difference (A − B)").set_index("Body part")
    assert list(shown.index) == [group_label(group) for group in report]  # "overall" first, then sorted
    for group, entry in report.items():
        row = shown.loc[group_label(group)]
        assert row["Studies"] == entry["studies"]
        assert (row[f"AUROC {DEFAULT_MODEL}"], row[f"AUROC {RIVAL}"]) == (
            f"{entry['auroc_a']:.3f}",
            f"{entry['auroc_b']:.3f}",
        )
        difference = entry["difference"]
        assert (row["Difference (A − B)"], row["95% CI"]) == (
            f"{difference['point']:.3f}",
            f"{difference['low']:.3f} to {difference['high']:.3f}",
        )
        assert difference["low"] < difference["point"] < difference["high"]

    listed = _table(at, f"P {RIVAL}")
    assert set(listed["Study"]) == _expected_disagreements(two_models) != set()


def test_a_disagreement_opens_in_explain(two_models: Path, scratch_mura_root: Path) -> None:
    at = start_app()
    at.sidebar.text_input(key="mura_root_input").set_value(str(scratch_mura_root)).run()
    at = _compared(at.switch_page(PAGE).run())
    study = sorted(_expected_disagreements(two_models))[-1]
    at.selectbox(key=model_compare.OPEN_STUDY_KEY).set_value(study).run()
    at.button(key="performance_compare_open").click().run()
    assert_clean(at)
    assert at.selectbox(key="explain_study_choice").value == study
    assert any(" · P(abnormal) = " in caption for image in at.image for caption in image.captions)
    at.switch_page(PAGE).run()  # back on Performance, the second model is still chosen
    assert at.selectbox(key=model_compare.OTHER_MODEL_KEY).value == RIVAL


def test_tables_that_disagree_on_a_label_are_one_sentence(two_models: Path) -> None:
    predictions = pd.read_csv(two_models / RIVAL / "predictions_valid.csv")
    first_study = predictions["study_path"] == predictions["study_path"].iloc[0]
    predictions.loc[first_study, "label"] = 1 - predictions.loc[first_study, "label"]
    predictions.to_csv(two_models / RIVAL / "predictions_valid.csv", index=False)
    at = _compared(start_app().switch_page(PAGE).run())
    reason = escape_markdown("the two prediction tables disagree on a study's label")
    assert [e.value for e in at.error] == [
        f"{escape_markdown(DEFAULT_MODEL)} and {escape_markdown(RIVAL)} cannot be compared: {reason}"
    ]


def test_every_comparison_row_follows_the_too_few_rule() -> None:
    """Issue 27, item 9: no "AUROC 0.000 (0.000-0.000)", no CI -1 to 1, no "None" for a tiny group."""
    report = {
        "overall": {
            "studies": 200,
            "abnormal": 90,
            "auroc_a": 0.91,
            "auroc_b": 0.9,
            "difference": {"point": 0.01, "low": -0.02, "high": 0.04},
        },
        "XR_FINGER": {
            "studies": 3,
            "abnormal": 1,
            "auroc_a": 0.0,
            "auroc_b": 0.0,
            "difference": {"point": 0.0, "low": 0.0, "high": 0.0},
        },
        "XR_SHOULDER": {
            "studies": 4,
            "abnormal": 2,
            "auroc_a": 0.5,
            "auroc_b": 1.0,
            "difference": {"point": -0.5, "low": -1.0, "high": 1.0},
        },
        "XR_HAND": {
            "studies": 2,
            "abnormal": 0,
            "auroc_a": None,
            "auroc_b": None,
            "difference": {"point": None, "low": None, "high": None},
        },
    }
    table = model_compare.difference_table(report, "a", "b").set_index("Body part")
    for part in ("Finger", "Shoulder", "Hand"):
        assert set(table.loc[part, ["AUROC a", "AUROC b", "Difference (A − B)", "95% CI"]]) == {TOO_FEW}
        assert table.loc[part, "CI excludes 0"] == "—"
    assert table.loc["All trained body parts", "95% CI"] == "-0.020 to 0.040"
    assert "None" not in table.astype(str).to_numpy().ravel().tolist()


def test_only_the_trained_parts_are_compared(two_models: Path) -> None:
    """Issue 27, item 5: the pool compared is the trained body parts', as on Overview and in the report."""
    for model in (DEFAULT_MODEL, RIVAL):
        path = two_models / model / "predictions_valid.csv"
        predictions = pd.read_csv(path)
        wrist = predictions.iloc[:1].assign(
            study_type="XR_WRIST",
            path="MURA-v1.1/valid/XR_WRIST/p1/s1/image1.png",
            study_path="MURA-v1.1/valid/XR_WRIST/p1/s1/",
        )
        pd.concat([predictions, wrist]).to_csv(path, index=False)
        (two_models / model / "metrics_valid.json").unlink()
        per_type = {"XR_HUMERUS": 0.5, "XR_FOREARM": 0.5, "default": 0.5}
        (two_models / model / "metrics_valid.json").write_text(
            json.dumps(summarise(pd.concat([predictions, wrist]), per_type, n_boot=20, seed=0))
        )
    at = _compared(start_app().switch_page(PAGE).run())
    shown = _table(at, "Difference (A − B)")
    assert list(shown["Body part"]) == ["All trained body parts", "Forearm", "Humerus"]
    assert shown["Studies"].iloc[0] == shown["Studies"].iloc[1] + shown["Studies"].iloc[2]
