"""Explain on a FracAtlas view (AppTest): the expert outline is drawn over the heat map and this
view's hit, energy and IoU are scored live for the method and layer picked; other views are untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data import fracatlas
from core.data.imaging import load_radiograph
from dashboard import accuracy, state, studies
from tests.app_pages import assert_clean, start_app
from tests.outlined_fracatlas import make_outlined_fracatlas

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

FILE = "images/IMG0000001.jpg"
REF = accuracy.FRACATLAS_PREFIX + FILE


@pytest.fixture
def outlined_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny outlined root standing in for data_samples/fracatlas."""
    root = make_outlined_fracatlas(tmp_path / "fracatlas")
    monkeypatch.setattr(accuracy, "SAMPLES_ROOT", root)
    return root


def test_expert_outline_only_for_outlined_fracatlas_refs(outlined_root: Path) -> None:
    mask = accuracy.expert_outline(REF)
    assert mask is not None and mask.any()
    np.testing.assert_array_equal(mask, fracatlas.read_outlines(outlined_root).mask(FILE))
    assert accuracy.expert_outline(accuracy.FRACATLAS_PREFIX + "images/IMG0000004.jpg") is None  # no fracture
    assert accuracy.expert_outline("synthetic/humerus_fracture") is None


def test_outline_is_drawn_and_scored(outlined_root: Path) -> None:
    pixels = load_radiograph(outlined_root / FILE).pixels
    mask = accuracy.expert_outline(REF)
    heatmap = mask.astype(np.float32)  # a perfect map
    picture = np.stack([pixels] * 3, axis=-1)
    drawn, scores = accuracy.outlined_view(REF, pixels, heatmap, picture)
    assert (drawn == (0, 255, 255)).all(axis=-1).any() and not (picture == (0, 255, 255)).all(axis=-1).any()
    this = scores.set_index("map").loc["this heat map"]
    assert (this["hit"], this["energy inside"], this["IoU at Otsu"]) == (1.0, 1.0, 1.0)
    assert scores.set_index("map").loc["uniform map", "energy inside"] == pytest.approx(mask.mean())
    unchanged, none = accuracy.outlined_view("synthetic/x", pixels, heatmap, picture)
    assert none is None and unchanged is picture


def test_explain_page_shows_the_outline_scores(
    outlined_root: Path, use_scratch_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pixels = load_radiograph(outlined_root / FILE).pixels
    study = studies.Study(REF, "FracAtlas IMG0000001", None, 1, [("IMG0000001.jpg", pixels)])
    monkeypatch.setattr(studies, "load_study", lambda ref, root: study)
    at = start_app()
    at.session_state[state.EXPLAIN_STUDY_KEY] = REF
    at = at.switch_page("../pages/explain.py").run()
    assert_clean(at)
    (scores,) = [f.value for f in at.dataframe if "IoU at Otsu" in f.value.columns]
    assert scores["map"].tolist() == ["this heat map", "uniform map", "bright bone map"]
    assert scores["hit"].between(0, 1).all()
    assert any("Expert fracture outline" in c.value for c in at.caption)
    # Another method re-scores the view live.
    at.selectbox(key="cam_method").set_value("LayerCAM").run()
    assert_clean(at)
    (rescored,) = [f.value for f in at.dataframe if "IoU at Otsu" in f.value.columns]
    assert rescored["map"].tolist() == scores["map"].tolist()
    # The chance maps do not depend on the method.
    assert rescored.iloc[1:].equals(scores.iloc[1:])
