"""The shipped curated index (data_samples/mura_index.csv) agrees with the shipped model's cache.

Its notes are shown beside live numbers (Browse cards, Explain), so a note written for an older model
contradicts them: notes carry no numbers, and every claim a note makes about a model's call must hold
in that model's cached predictions at its card's thresholds. Needs no MURA folder.
"""

from __future__ import annotations

import functools
import json
import re

import pandas as pd
import pytest

from core.eval.metrics import study_table
from core.model.card import card_thresholds, threshold_for
from core.store.artifacts import SHIPPED_WEIGHTS_DIR
from data_samples import make_mura_index

#: A note's claim about a model's call: "(abnormal|normal) study <model> calls (normal|abnormal)" or
#: "<model>'s most confident right call of (an abnormal|a normal) study".
_WRONG = re.compile(r"confidently wrong: (abnormal|normal) study (\S+) calls (abnormal|normal)")
_RIGHT = re.compile(r"(\S+)'s most confident right call of an? (abnormal|normal) study")


@pytest.fixture(scope="module")
def index() -> pd.DataFrame:
    return pd.read_csv(make_mura_index.INDEX_FILE)


@functools.cache
def _cached_studies(model: str) -> pd.DataFrame:
    """The model's cached study table with each study's card threshold and the model's call."""
    directory = SHIPPED_WEIGHTS_DIR / model
    thresholds = card_thresholds(json.loads((directory / "model_card.json").read_text()))
    studies = study_table(pd.read_csv(directory / "predictions_valid.csv")).set_index("study_path")
    threshold = studies["study_type"].map(lambda t: threshold_for(thresholds, t))
    return studies.assign(called_abnormal=studies["probability"] >= threshold)


def test_notes_carry_no_numbers(index: pd.DataFrame) -> None:
    numbered = index[index["reason"].str.contains(r"\d\.\d|P\(abnormal\)|threshold", regex=True)]
    assert numbered.empty, numbered["reason"].tolist()


def test_every_claim_about_a_call_holds_in_the_cache(index: pd.DataFrame) -> None:
    claims = 0
    for row in index.itertuples():
        for match in _WRONG.finditer(row.reason):
            truth, model, call = match.groups()
            study = _cached_studies(model).loc[row.study_path]
            assert (int(study["label"]), bool(study["called_abnormal"])) == (truth == "abnormal", call == "abnormal"), (
                row.study_path
            )
            assert truth != call
            claims += 1
        for match in _RIGHT.finditer(row.reason):
            model, truth = match.groups()
            study = _cached_studies(model).loc[row.study_path]
            assert int(study["label"]) == bool(study["called_abnormal"]) == (truth == "abnormal"), row.study_path
            claims += 1
        assert int(row.label) == int(_cached_studies(make_mura_index.DEFAULT_MODEL).loc[row.study_path, "label"])
    assert claims > 0, "the index names no model call: the pattern above no longer matches its notes"
