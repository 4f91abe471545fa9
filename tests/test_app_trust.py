"""The trust scorecard (AppTest): on the Heat-map accuracy page from a core.trust cache, its line in
Explain's method picker, and one sentence for a missing or broken cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import core.eval.trust as trust
from core.model.checkpoint import DEFAULT_MODEL
from core.store.artifacts import ModelArtifacts
from tests.app_pages import assert_clean, open_page
from tests.trust_cache import METHODS, trusted_weights

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

ACCURACY = "../pages/heatmap_accuracy.py"
EXPLAIN = "../pages/explain.py"


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory, scratch_weights: Path) -> Path:
    """A weights folder whose scratch model has a trust cache over a tiny fake MURA."""
    return trusted_weights(
        tmp_path_factory,
        scratch_weights,
        "trust",
        layers=["last conv (1280 ch, stride 32)", "stage 5 (96 ch, stride 16)"],
    )


def _open(monkeypatch: pytest.MonkeyPatch, weights: Path, page: str):  # noqa: ANN202 (AppTest)
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    monkeypatch.delenv("MURA_ROOT", raising=False)
    return open_page(page)


def test_scorecard_with_verdicts_cascade_and_agreement(monkeypatch: pytest.MonkeyPatch, trusted: Path) -> None:
    at = _open(monkeypatch, trusted, ACCURACY)
    summary = trust.read_cache(ModelArtifacts.of(DEFAULT_MODEL, trusted)).summary
    (card,) = [t.value for t in at.table]
    assert card.index.tolist() == sorted(METHODS)
    assert "deletion AUC (lower is better)" in card.columns
    verdicts = trust.method_verdicts(summary)
    shown = [m.value for m in at.markdown]
    assert all(f"- {sentence}" in shown for sentence in verdicts.values())
    # FEM does not know the class: the same map for P(normal) and P(abnormal).
    assert "does not know the class" in verdicts["FEM"]
    assert card.loc["FEM", "logit check"] == "FAILS"
    assert any(m.value.startswith("**Over 4 radiographs") for m in at.markdown)
    assert len(at.get("plotly_chart")) >= 2  # cascade and Kendall's tau
    at.selectbox(key="trust_layer").set_value("stage 5 (96 ch, stride 16)").run()
    assert_clean(at)


def test_explain_shows_the_methods_scorecard_line(monkeypatch: pytest.MonkeyPatch, trusted: Path) -> None:
    at = _open(monkeypatch, trusted, EXPLAIN)
    lines = [c.value for c in at.sidebar.caption if c.value.startswith("Trust scorecard")]
    assert len(lines) == 1 and "GradCAM" not in lines[0] and "radiographs" in lines[0]
    at.sidebar.selectbox(key="cam_method").set_value("ScoreCAM").run()
    assert any("ScoreCAM is not in the trust scorecard" in c.value for c in at.sidebar.caption)


def test_no_cache_is_a_caption_and_a_broken_one_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, scratch_weights: Path, trusted: Path
) -> None:
    at = _open(monkeypatch, scratch_weights, ACCURACY)
    assert any("No sanity-check cache" in c.value and "python -m core.trust" in c.value for c in at.caption)
    assert not [c for c in at.sidebar.caption if c.value.startswith("Trust scorecard")]
    broken = tmp_path / "weights"
    shutil.copytree(trusted, broken)
    rows = ModelArtifacts.of(DEFAULT_MODEL, broken).trust_rows()
    rows.write_text(rows.read_text().replace("GradCAM", "GradCAMX", 1))
    at = _open(monkeypatch, broken, ACCURACY)
    assert any("is not the table" in e.value for e in at.error)
