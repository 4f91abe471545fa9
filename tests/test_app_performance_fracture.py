"""Performance on FracAtlas for a fracture-aware model (issue 28, item 3): the fracture output's P(fracture) on
the fixed test part by default, agreeing with metrics_fracatlas.json's ``fracture_output``; the MURA output
(P(abnormal), zero-shot on every image) one click away; no image of the training folds in any figure."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core.data import fracture_split
from core.eval.evaluation import FRACATLAS, FRACTURE_COLUMN, fracture_test_part, fracture_thresholds
from core.model.card import MURA_LABEL, model_outputs
from core.model.checkpoint import DEFAULT_MODEL
from core.model.registry import FRACTURE
from core.store.artifacts import SHIPPED_WEIGHTS_DIR
from dashboard import evaluation, studies
from dashboard.charts import format_estimate
from tests.app_pages import assert_clean, open_page, start_app

PAGE = "../pages/performance.py"
POOL = "All upper-limb images"
SHIPPED = SHIPPED_WEIGHTS_DIR / DEFAULT_MODEL


def test_fracture_test_part_keeps_only_test_images_scored_on_p_fracture() -> None:
    predictions = pd.DataFrame(
        {
            "file": ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"],
            "probability": [0.1, 0.2, 0.3, 0.4, 0.5],
            FRACTURE_COLUMN: [0.9, 0.8, 0.7, 0.6, 0.55],
        }
    )
    split = pd.DataFrame(
        {
            "file": ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "d.jpg"],
            # e.jpg is withheld (in no part); d.jpg is listed twice, once in a training fold.
            "part": [fracture_split.TEST, fracture_split.fold_name(0), fracture_split.OUT_OF_SCOPE, "test", "fold1"],
        }
    )
    rows = fracture_test_part(predictions, split)
    assert rows["file"].tolist() == ["a.jpg"]
    assert rows["probability"].tolist() == [0.9]  # P(fracture), not P(abnormal)
    assert fracture_thresholds(0.7) == {"hand": 0.7, "shoulder": 0.7, "hand+shoulder": 0.7, "default": 0.7}


@pytest.fixture
def shipped_fracture_default(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The shipped weights/ folder, whose default model has a fracture output and a cached FracAtlas evaluation of
    it; its metrics_fracatlas.json."""
    metrics_file = SHIPPED / "metrics_fracatlas.json"
    card = json.loads((SHIPPED / "model_card.json").read_text(encoding="utf-8"))
    if FRACTURE not in model_outputs(card) or not metrics_file.is_file():
        pytest.skip(f"the default model {DEFAULT_MODEL} has no fracture output with a cached FracAtlas evaluation")
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("MURA_ROOT", raising=False)
    return json.loads(metrics_file.read_text(encoding="utf-8"))


def _tables(at) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The live table (at your thresholds) and the cached one (at the card's), indexed by body part."""
    live = next(f.value for f in at.dataframe if "TP" in f.value.columns).set_index("Body part")
    cached = next(f.value for f in at.dataframe if "AUROC" in f.value.columns).set_index("Body part")
    return live, cached


def test_no_trained_image_is_in_the_fracture_output_table(shipped_fracture_default: dict) -> None:
    split = fracture_split.read_split(SHIPPED / fracture_split.SPLIT_FILE)
    trained = fracture_split.trained_files(split)
    table = evaluation.evaluation_table(DEFAULT_MODEL, FRACATLAS, "all", FRACTURE)
    assert not set(table["file"]) & trained
    assert set(table["file"]) <= set(split.loc[split["part"] == fracture_split.TEST, "file"])
    assert len(table) == shipped_fracture_default["fracture_output"]["images"]
    predictions = pd.read_csv(SHIPPED / "predictions_fracatlas.csv")
    by_file = predictions.set_index("file")[FRACTURE_COLUMN]
    assert table["probability"].tolist() == by_file[table["file"]].tolist()


@pytest.mark.slow
def test_performance_shows_the_fracture_output_on_the_test_part_then_the_mura_output(
    shipped_fracture_default: dict,
) -> None:
    at = open_page(PAGE)
    at.radio(key="performance_dataset").set_value(FRACATLAS).run()
    assert_clean(at)
    assert at.radio(key="performance_output").value == FRACTURE
    fracture = shipped_fracture_default["fracture_output"]["all"]["overall"]
    live, cached = _tables(at)
    assert cached.at[POOL, "AUROC"] == format_estimate(fracture, "auroc")
    assert cached.at[POOL, "Matches yours"] == "yes"
    card = json.loads((SHIPPED / "model_card.json").read_text(encoding="utf-8"))
    assert cached.at[POOL, "Threshold"] == f"{card['fracture_threshold']:.3f}"  # one threshold, not "per part"
    # The live counts, at the card's one fracture threshold, are the cached summary's: the same 300-odd images.
    assert live.at[POOL, "Images"] == fracture["n"] == shipped_fracture_default["fracture_output"]["images"]
    assert {name.lower(): int(live.at[POOL, name]) for name in ("TP", "FP", "FN", "TN")} == fracture["confusion"]
    for region in ("hand", "shoulder", "hand+shoulder"):
        assert at.slider(key=f"performance:threshold:{DEFAULT_MODEL}:{FRACATLAS}:{FRACTURE}:{region}").value == (
            pytest.approx(card["fracture_threshold"])
        )
    assert any("leg/hip images of the test part" in c.value for c in at.caption)

    at.radio(key="performance_output").set_value(MURA_LABEL).run()
    assert_clean(at)
    abnormal = shipped_fracture_default["all"]["overall"]
    live, cached = _tables(at)
    assert cached.at[POOL, "AUROC"] == format_estimate(abnormal, "auroc")
    assert live.at[POOL, "Images"] == abnormal["n"] > fracture["n"]
    assert any("label here is **fracture**" in i.value for i in at.info)


@pytest.mark.slow
def test_overview_quotes_the_fracture_output_on_the_test_part_and_names_each_output(
    shipped_fracture_default: dict,
) -> None:
    at = start_app()
    assert_clean(at)
    fracture = shipped_fracture_default["fracture_output"]["all"]["overall"]
    abnormal = shipped_fracture_default["all"]["overall"]
    (external,) = [c.value for c in at.caption if c.value.startswith("External check on FracAtlas")]
    tested = f"P(fracture), on the {fracture['n']} upper-limb images of the test part it never trained on: AUROC "
    assert tested + format_estimate(fracture, "auroc") in external
    assert f"P(abnormal), zero-shot on all {abnormal['n']} upper-limb images" in external
    assert external.index("P(fracture)") < external.index("P(abnormal)")


@pytest.mark.slow
def test_browse_judges_the_shipped_fracatlas_images_on_p_fracture(shipped_fracture_default: dict) -> None:
    at = start_app().switch_page("../pages/browse.py").run()
    assert_clean(at)
    assert at.radio(key="browse_dataset").value == FRACATLAS
    card = json.loads((SHIPPED / "model_card.json").read_text(encoding="utf-8"))
    predictions = pd.read_csv(SHIPPED / "predictions_fracatlas.csv")
    samples = studies.fracatlas_samples().merge(predictions[["file", FRACTURE_COLUMN]], on="file")
    shown = [m.value for m in at.markdown if m.value.startswith("P(")]
    assert shown and all(text.startswith("P(fracture) = ") for text in shown)
    upper = samples[samples["upper_limb"].astype(bool)]
    expected = {
        f"P(fracture) = **{p:.3f}** at threshold {card['fracture_threshold']:.3f}: "
        + ("right" if (p >= card["fracture_threshold"]) == bool(fractured) else "wrong")
        for p, fractured in zip(upper[FRACTURE_COLUMN], upper["fractured"], strict=True)
    }
    judged = {text for text in shown if "at threshold" in text}
    assert judged and judged <= expected
