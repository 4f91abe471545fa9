"""Issue 27, item 8: the data map draws FracAtlas points from the shipped samples and from the FracAtlas
folder the rest of the app uses (named once, on any page), and says in plain words where a picture is."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dashboard import accuracy, data_map
from tests.app_pages import open_page

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "fracatlas"
SAMPLE = "images/IMG0002334.jpg"  # one of the radiographs shipped in data_samples/fracatlas


def _not_shipped() -> str:
    shipped = set(pd.read_csv(accuracy.SAMPLES_ROOT / "labels.csv")["file"])
    return next(f for f in pd.read_csv(SHARED / "labels.csv")["file"] if f not in shipped)


def test_shipped_samples_are_drawn_without_any_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRACATLAS_ROOT", raising=False)
    pictures, _type, problem = data_map._views(SAMPLE, "fracatlas", None)
    assert problem is None and pictures and pictures[0][0] == "IMG0002334.jpg"


@pytest.mark.skipif(not (SHARED / "labels.csv").is_file(), reason="no FracAtlas copy at ../shared/fracatlas")
def test_other_images_come_from_the_folder_the_app_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRACATLAS_ROOT", raising=False)
    other = _not_shipped()
    pictures, _type, problem = data_map._views(other, "fracatlas", None)
    assert not pictures and problem.startswith(f"{Path(other).name} is not among the FracAtlas radiographs shipped")
    assert "FRACATLAS_ROOT" not in problem and "/" not in problem.split(":")[0]
    monkeypatch.setenv("FRACATLAS_ROOT", str(SHARED))
    pictures, _type, problem = data_map._views(other, "fracatlas", None)
    assert problem is None and pictures


def test_a_folder_named_on_heatmap_accuracy_is_the_data_maps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("FRACATLAS_ROOT", raising=False)
    at = open_page("../pages/heatmap_accuracy.py")
    at.text_input(key="accuracy_root").set_value(str(accuracy.SAMPLES_ROOT)).run()
    assert not at.exception
    at.switch_page("../pages/data_map.py").run()
    assert not at.exception
    assert at.text_input(key="data_map_fracatlas_root").value == str(accuracy.SAMPLES_ROOT)
