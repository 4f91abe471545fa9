"""The model card (``model_card.json``): read and written here only, with a schema version.

A card says what a model is and how it was made (data, recipe, holdout results) and holds the
operating thresholds: one per study type plus a ``"default"`` for any other body part, chosen on
train/'s held-out patients. core.train writes a card for one run, core.ensemble one for several
members; the dashboard, core.predict and core.evaluate read it.

Example:
    >>> card = read_card(Path("weights/mura_efficientnet_lite0/model_card.json"))  # doctest: +SKIP
    >>> threshold_for(card_thresholds(card), "XR_WRIST")  # no own threshold: the default  # doctest: +SKIP
    0.4228
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from core.store import atomic
from core.store.artifacts import display_name

__all__ = [
    "CARD_SCHEMA_VERSION",
    "DEFAULT_THRESHOLD_KEY",
    "PAPER_THRESHOLD",
    "NEVER_VALID",
    "ModelCardError",
    "read_card",
    "write_card",
    "card_thresholds",
    "threshold_for",
    "trained_study_types",
    "subset_counts",
    "kfold_description",
]

#: Version of the card's layout; cards written before versioning count as version 1.
CARD_SCHEMA_VERSION = 1
#: The thresholds entry for study types a card does not name; the same key core.eval.metrics falls back to
#: (it does not import this module, which brings torch; tests/test_metrics.py pins the two equal).
DEFAULT_THRESHOLD_KEY = "default"
#: The MURA paper's operating point, used when a card names no threshold at all.
PAPER_THRESHOLD = 0.5
NEVER_VALID = "MURA valid/ never used for training or selection"
_RESTORE = "restore it or re-run core.train / core.ensemble"


class ModelCardError(ValueError):
    """A model card cannot be used; the message (one sentence) names the file."""


def read_card(path: Path) -> dict[str, Any]:
    """The card at ``path``, checked: a JSON object of a known schema version with numeric thresholds.

    Raises:
        ModelCardError: the file is missing, unreadable, not UTF-8, not JSON, or not a card.
    """
    name = display_name(path)
    try:
        card = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ModelCardError(f"No model card at {name}: every checkpoint needs one.") from None
    except OSError as exc:
        raise ModelCardError(f"The model card {name} cannot be read ({exc.strerror or exc}).") from exc
    except UnicodeDecodeError:
        raise ModelCardError(f"The model card {name} is not UTF-8 text; {_RESTORE}.") from None
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"The model card {name} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
                             f"{_RESTORE}.") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"The model card {name} holds a JSON {_json_type(card)}, not an object; {_RESTORE}.")
    version = card.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= CARD_SCHEMA_VERSION:
        raise ModelCardError(f"The model card {name} has schema version {version!r}, and this version of "
                             f"MURA Lens reads schema versions up to {CARD_SCHEMA_VERSION}.")
    thresholds = card.get("thresholds", {})
    if not isinstance(thresholds, dict) or not all(_is_probability(value) for value in thresholds.values()):
        raise ModelCardError(f"The model card {name} has thresholds that are not numbers between 0 and 1; "
                             f"{_RESTORE}.")
    return card


def _json_type(value: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "null")


def _is_probability(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0.0 <= value <= 1.0


def write_card(path: Path, card: Mapping[str, Any]) -> None:
    """Write ``card`` atomically with the current schema version first."""
    atomic.write_text(path, json.dumps({"schema_version": CARD_SCHEMA_VERSION} | dict(card), indent=2) + "\n")


def card_thresholds(card: Mapping[str, Any] | None) -> dict[str, float]:
    """The card's thresholds per study type plus ``"default"`` (the paper's 0.5 when the card has none)."""
    thresholds = {key: float(value) for key, value in ((card or {}).get("thresholds") or {}).items()}
    thresholds.setdefault(DEFAULT_THRESHOLD_KEY, PAPER_THRESHOLD)
    return thresholds


def threshold_for(thresholds: Mapping[str, float], study_type: str | None) -> float:
    """The threshold a study type is judged at: its own, else the default, else the paper's 0.5.

    ``thresholds`` is a card's (see :func:`card_thresholds`) or one a user has set.
    """
    if study_type is not None and study_type in thresholds:
        return float(thresholds[study_type])
    return float(thresholds.get(DEFAULT_THRESHOLD_KEY, PAPER_THRESHOLD))


def trained_study_types(card: Mapping[str, Any]) -> list[str]:
    """Body parts the model was trained on, from its card (training data, else its thresholds)."""
    trained = (card.get("training_data") or {}).get("all")
    if isinstance(trained, dict) and trained:
        return sorted(trained)
    return sorted(key for key in card.get("thresholds") or {} if key != DEFAULT_THRESHOLD_KEY)


# --- what core.train and core.ensemble write ---------------------------------------------------------

def subset_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images, studies, patients and abnormal images per study type, as model cards list them."""
    return {
        t: {"images": int(len(g)), "studies": int(g["study_path"].nunique()),
            "patients": int(g["patient"].nunique()), "abnormal_images": int(g["label"].sum())}
        for t, g in frame.groupby("study_type")
    }


def kfold_description(folds: int, split_seed: int) -> str:
    """The K-fold split in the model card's words (an ensemble card describes a whole CV with it)."""
    return f"patient-level {folds}-fold split (GroupKFold, shuffled, seed {split_seed})"
