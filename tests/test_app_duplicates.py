"""Issue 27 (what FiftyOne users expect): a near-duplicate group side by side, with a label conflict
highlighted; the shipped cache's one train/valid leak pairs a normal train view with an abnormal valid study."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboard import data_map
from tests.app_pages import open_page

pytestmark = pytest.mark.slow  # runs the app's pages in Streamlit's AppTest


def test_label_conflict_is_said_within_one_dataset_family() -> None:
    members = pd.DataFrame({"dataset": ["mura_train", "mura_valid"], "label_text": ["normal", "abnormal"]})
    sentence = data_map.label_conflict(members)
    assert sentence.startswith("Label conflict") and "normal in MURA train" in sentence
    assert data_map.label_conflict(members.assign(label_text="normal")) is None
    mixed = pd.DataFrame({"dataset": ["mura_valid", "fracatlas"], "label_text": ["abnormal", "no fracture"]})
    assert data_map.label_conflict(mixed) is None  # two labels of two datasets, not a conflict


def test_the_leak_group_is_shown_side_by_side_with_its_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MURA_LENS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("MURA_ROOT", raising=False)
    at = open_page("../pages/data_map.py")
    at.selectbox(key="duplicates_scope").set_value("train-valid leak").run()
    assert not at.exception
    assert any(e.value.startswith("Label conflict: these near-copies carry different MURA labels") for e in at.error)
    shown = [c.value for c in at.caption if "· label " in c.value]
    assert any("MURA train" in c and "label normal" in c for c in shown)
    assert any("MURA valid" in c and "label abnormal" in c for c in shown)
