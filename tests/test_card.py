"""core.model.card: the model card read and written in one place, thresholds with their default."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.model.card import (
    CARD_SCHEMA_VERSION,
    DEFAULT_THRESHOLD_KEY,
    PAPER_THRESHOLD,
    ModelCardError,
    card_thresholds,
    read_card,
    threshold_for,
    trained_study_types,
    write_card,
)

#: Damaged cards as issue 19 found them, plus cards that parse but cannot be used.
DAMAGED_CARDS = {
    "truncated": b'{"architecture": "mobilenet_v2", "thresh',
    "empty": b"",
    "list": b"[]",
    "not UTF-8": b'{"name": "\xff\xfe"}',
    "threshold text": b'{"thresholds": {"XR_HUMERUS": "high"}}',
    "threshold above 1": b'{"thresholds": {"default": 7}}',
    "newer schema": json.dumps({"schema_version": CARD_SCHEMA_VERSION + 1}).encode(),
    "100,000 nested brackets": b'{"thresholds": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@pytest.mark.parametrize("content", DAMAGED_CARDS.values(), ids=DAMAGED_CARDS.keys())
def test_a_damaged_card_is_one_sentence_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "some_model" / "model_card.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(ModelCardError) as raised:
        read_card(path)
    message = str(raised.value)
    assert "some_model/model_card.json" in message
    assert "\n" not in message and message.endswith(".") and not re.search(r"[.!?] [A-Z]", message)
    assert str(tmp_path) not in message  # no server path shown to users


def test_missing_card_says_every_checkpoint_needs_one(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="No model card at absent/model_card.json"):
        read_card(tmp_path / "absent" / "model_card.json")


def test_written_card_reads_back_with_its_schema_version_first(tmp_path: Path) -> None:
    path = tmp_path / "model_card.json"
    write_card(path, {"name": "demo", "thresholds": {DEFAULT_THRESHOLD_KEY: 0.4, "XR_HUMERUS": 0.3}})
    assert next(iter(json.loads(path.read_text()))) == "schema_version"
    assert read_card(path) == {
        "schema_version": CARD_SCHEMA_VERSION,
        "name": "demo",
        "thresholds": {DEFAULT_THRESHOLD_KEY: 0.4, "XR_HUMERUS": 0.3},
    }
    assert path.read_text().endswith("}\n")


def test_card_before_versioning_reads_as_version_one(tmp_path: Path) -> None:
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps({"name": "old"}))
    assert read_card(path) == {"name": "old"}


def test_threshold_falls_back_to_the_default_then_to_the_paper() -> None:
    card = {"thresholds": {DEFAULT_THRESHOLD_KEY: 0.42, "XR_HUMERUS": 0.33}}
    thresholds = card_thresholds(card)
    assert threshold_for(thresholds, "XR_HUMERUS") == 0.33
    assert threshold_for(thresholds, "XR_WRIST") == 0.42
    assert threshold_for(thresholds, None) == 0.42
    assert card_thresholds({}) == {DEFAULT_THRESHOLD_KEY: PAPER_THRESHOLD}
    assert threshold_for({}, "XR_WRIST") == PAPER_THRESHOLD


def test_trained_study_types_from_training_data_else_thresholds() -> None:
    counts = {"XR_HUMERUS": {"images": 3}, "XR_FOREARM": {"images": 2}}
    assert trained_study_types({"training_data": {"all": counts}}) == ["XR_FOREARM", "XR_HUMERUS"]
    assert trained_study_types({"thresholds": {DEFAULT_THRESHOLD_KEY: 0.5, "XR_WRIST": 0.4}}) == ["XR_WRIST"]
    assert trained_study_types({}) == []
