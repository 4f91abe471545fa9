"""The Model card of the shipped fracture-aware model shows its test-part figures against their targets,
each read from the cache its command wrote."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from core.eval.metrics import format_interval
from core.store.artifacts import SHIPPED_WEIGHTS_DIR, ModelArtifacts
from dashboard.state import MODEL_KEY
from tests.app_pages import assert_clean, start_app

MODEL = "mura_efficientnet_lite0_fracture"


def _shipped_app(monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The app on the shipped weights, no MURA folder, with the fracture-aware model chosen."""
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(SHIPPED_WEIGHTS_DIR))
    monkeypatch.delenv("MURA_ROOT", raising=False)
    at = start_app()
    at.session_state[MODEL_KEY] = MODEL
    return at


@pytest.mark.slow
def test_the_card_shows_the_test_part_figures_met_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    at = _shipped_app(monkeypatch)
    at = at.switch_page("../pages/model_card.py").run()
    assert_clean(at)
    assert any(h.value == "The fracture output on FracAtlas's test part (measured once)" for h in at.subheader)
    table = next(df.value for df in at.dataframe if "Figure" in df.value.columns).set_index("Figure")
    files = ModelArtifacts.of(MODEL, SHIPPED_WEIGHTS_DIR)
    overall = json.loads(files.metrics("fracatlas").read_text(encoding="utf-8"))["fracture_output"]["all"]["overall"]
    auroc = table.loc["fracture AUROC, upper limb"]
    assert auroc["Measured (95% CI)"] == format_interval(overall["auroc"])
    assert auroc["Outcome"] == ("met" if overall["auroc"]["point"] >= 0.88 else "missed")
    summary = json.loads(files.localization_summary("fracatlas").read_text(encoding="utf-8"))
    hit = next(g for g in summary["groups"] if g["method"] == "GradCAM" and g["layer"].startswith("fracture map"))
    located = table.loc["Grad-CAM at the fracture map hits the outline"]
    assert located["Measured (95% CI)"] == format_interval(hit["hit"])
    assert located["Outcome"] == "met"
    assert table.loc["energy inside the outline", "Outcome"].endswith("x: met")  # against the before model's map
    checks = json.loads(files.trust_summary("fracture").read_text(encoding="utf-8"))
    group = next(g for g in checks["groups"] if g["method"] == "GradCAM" and g["layer"] == checks["default_layer"])
    assert table.loc["randomisation check of that map (rank correlation)", "Outcome"] == group["randomisation"]
    assert table.loc["logit check: P(fracture) vs P(no fracture) map", "Outcome"] == group["logit_check"]


@pytest.mark.slow
def test_browse_sorts_by_the_probability_it_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    at = _shipped_app(monkeypatch)
    at = at.switch_page("../pages/browse.py").run()
    assert_clean(at)
    assert at.radio(key="browse_dataset").value == "fracatlas"
    assert at.selectbox(key="browse_sort").options == [
        "Most confidently wrong first",
        "Highest P(fracture) first",
        "Lowest P(fracture) first",
        "Study path",
    ]


@pytest.mark.slow
def test_explain_on_a_hand_leads_with_the_fracture_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first visit opens on a FracAtlas hand: the abnormal output has no verdict there, the fracture
    output has one, and the page says so instead of flagging the image as one the model cannot read."""
    at = _shipped_app(monkeypatch)
    at = at.switch_page("../pages/explain.py").run(timeout=120)
    assert_clean(at)
    assert any("the **fracture** output" in w.value and "reads it" in w.value for w in at.warning)
    assert not any("Looks like a hand" in e.value for e in at.error)
    assert {m.label for m in at.metric} >= {"Study P(fracture)", "Fracture verdict", "Fracture threshold"}
    headers = [h.value for h in at.subheader]
    assert "Fracture" in headers
