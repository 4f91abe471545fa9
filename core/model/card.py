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
    "MURA_LABEL",
    "FRACATLAS_LABEL",
    "FRACTURE_REGIONS",
    "model_outputs",
    "out_of_scope_reason",
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
        raise ModelCardError(
            f"The model card {name} is not valid JSON (line {exc.lineno}, column {exc.colno}); {_RESTORE}."
        ) from None
    except RecursionError:  # e.g. 100,000 nested brackets: deeper than Python's JSON reader goes
        raise ModelCardError(f"The model card {name} nests its values too deeply to be a card; {_RESTORE}.") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"The model card {name} holds a JSON {_json_type(card)}, not an object; {_RESTORE}.")
    version = card.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= CARD_SCHEMA_VERSION:
        raise ModelCardError(
            f"The model card {name} has schema version {version!r}, and this version of "
            f"MURA Lens reads schema versions up to {CARD_SCHEMA_VERSION}."
        )
    thresholds = card.get("thresholds", {})
    if not isinstance(thresholds, dict) or not all(_is_probability(value) for value in thresholds.values()):
        raise ModelCardError(f"The model card {name} has thresholds that are not numbers between 0 and 1; {_RESTORE}.")
    return card


def _json_type(value: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "null")


def _is_probability(value: object) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0.0 <= value <= 1.0
    )


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


# --- the one rule for verdicts ----------------------------------------------------------------------------------

#: The label of each dataset, and the model output that predicts it: MURA's studies are labelled
#: abnormal or normal, FracAtlas's images fractured or not. A model is scored only against a label one of
#: its outputs was trained on.
MURA_LABEL = "abnormal"
FRACATLAS_LABEL = "fracture"
#: FracAtlas regions a fracture output is trained on (its "hand" region holds hand, wrist and forearm views);
#: leg/hip never is.
FRACTURE_REGIONS = ("hand", "shoulder", "hand+shoulder")
_REGION_WORDS = {"hand": "hand/wrist/forearm", "hand+shoulder": "hand and shoulder", "leg/hip": "leg/hip"}


def model_outputs(card: Mapping[str, Any]) -> tuple[str, ...]:
    """The labels the model's outputs predict: the keys (or items) of the card's ``outputs``, as
    core.fracture_model writes them ({"abnormal": {...}, "fracture": {...}}); without one, ``abnormal``."""
    outputs = card.get("outputs")
    return tuple(outputs) if isinstance(outputs, (list, dict)) and outputs else (MURA_LABEL,)


def out_of_scope_reason(
    card: Mapping[str, Any], body_part: str | None, label: str = MURA_LABEL, *, outputs: tuple[str, ...] | None = None
) -> str | None:
    """None when the model may be scored on this body part for this label; otherwise why not, one sentence.

    Every page applies this one rule before a verdict, a confusion cell or a right/wrong mark: a
    verdict only for a body part and a label the model was trained on. Anything else is shown as out of
    scope, not scored: a threshold chosen on humerus and forearm "abnormal" says nothing about a wrist,
    and a MURA "abnormal" call is not a FracAtlas "fracture" call.

    Args:
        body_part: a MURA study type ("XR_WRIST"), a FracAtlas region ("hand", "leg/hip"), or None (unknown).
        label: what the case is labelled for: ``MURA_LABEL`` or ``FRACATLAS_LABEL``.
        outputs: the labels the model predicts (default: :func:`model_outputs` of the card); a model with a
            fracture output is scored on FracAtlas's upper-limb regions (:data:`FRACTURE_REGIONS`).
    """
    outputs = model_outputs(card) if outputs is None else outputs
    trained = trained_study_types(card)
    trained_words = " and ".join(t.removeprefix("XR_").lower() for t in trained) or "its training body parts"
    if label not in outputs:
        return (
            f"Not scored: the model predicts {' and '.join(outputs)}, not {label}, so it cannot be right or wrong "
            f"about a {label} label."
        )
    if body_part is None:
        return f"Not scored: the body part is unknown, and the model was trained on {trained_words} only."
    if label == FRACATLAS_LABEL:
        if body_part in FRACTURE_REGIONS:
            return None
        return (
            f"Not scored: the fracture output was trained on upper-limb radiographs, not "
            f"{_REGION_WORDS.get(body_part, body_part)}."
        )
    if body_part in trained:
        return None
    return (
        f"Not scored: the model was trained on {trained_words} radiographs only, so "
        f"{_REGION_WORDS.get(body_part, body_part.removeprefix('XR_').lower())} is out of scope."
    )


# --- what core.train and core.ensemble write ---------------------------------------------------------


def subset_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images, studies, patients and abnormal images per study type, as model cards list them."""
    return {
        t: {
            "images": int(len(g)),
            "studies": int(g["study_path"].nunique()),
            "patients": int(g["patient"].nunique()),
            "abnormal_images": int(g["label"].sum()),
        }
        for t, g in frame.groupby("study_type")
    }


def kfold_description(folds: int, split_seed: int) -> str:
    """The K-fold split in the model card's words (an ensemble card describes a whole CV with it)."""
    return f"patient-level {folds}-fold split (GroupKFold, shuffled, seed {split_seed})"
