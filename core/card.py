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
import platform
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from core import atomic
from core.artifacts import display_name

if TYPE_CHECKING:  # type hints only: core.train and core.models import this module
    from core.models import ModelConfig
    from core.train import TrainConfig

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
    "split_description",
    "training_card",
    "ensemble_card",
]

#: Version of the card's layout; cards written before versioning count as version 1.
CARD_SCHEMA_VERSION = 1
#: The thresholds entry for study types a card does not name.
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
    except RecursionError:  # e.g. 100,000 nested brackets: deeper than Python's JSON reader goes
        raise ModelCardError(f"The model card {name} nests its values too deeply to be a card; {_RESTORE}.") from None
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


def split_description(config: TrainConfig) -> str:
    """How the holdout was drawn, in the words the model card uses."""
    if config.folds > 1:
        split = f"{kfold_description(config.folds, config.split_seed)}, fold {config.fold} held out"
    else:
        split = (f"patient-level GroupShuffleSplit, {config.holdout_fraction:.0%} of patients held out, "
                 f"seed {config.split_seed}")
    if config.train_fraction < 1:
        split += f"; fitted on {config.train_fraction:.0%} of the other patients (seeded shuffle)"
    return f"{split}; {NEVER_VALID}"


def _machine_description(config: TrainConfig) -> str:
    if torch.device(config.device).type == "cuda":
        return f"{torch.cuda.get_device_name(config.device)} GPU, torch {torch.__version__}"
    return f"{platform.machine()} CPU, {config.threads} threads, torch {torch.__version__}"


def training_card(config: TrainConfig, architecture: ModelConfig, *, name: str, images: pd.DataFrame,
                  fit: pd.DataFrame, holdout: pd.DataFrame, class_weights: dict[str, tuple[float, float]],
                  elapsed: float, best_epoch: int, thresholds: dict[str, float],
                  holdout_metrics: dict[str, dict], fracture_fit: pd.DataFrame | None = None,
                  fracture_holdout: pd.DataFrame | None = None) -> dict[str, Any]:
    """The card of one core.train run at its best epoch: data, recipe, holdout metrics and thresholds.

    ``fracture_fit``/``fracture_holdout``: a joint run's FracAtlas rows (its second, unshipped output).
    """
    card = {
        "name": name,
        "architecture": config.arch,
        "description": architecture.description,
        "initialisation": architecture.initialisation if config.pretrained else "random",
        "input": f"{config.input_size}x{config.input_size} greyscale letterboxed (padding = median border value), "
                 "copied to 3 channels, normalised as the pretrained weights expect",
        "output": "one logit; sigmoid = probability the radiograph is abnormal; study = mean of its views",
        "training_data": {
            "source": "MURA v1.1 train/ (Stanford AIMI), study types " + ", ".join(config.study_types),
            "all": subset_counts(images),
            "fit": subset_counts(fit),
            "holdout": subset_counts(holdout),
            "split": split_description(config),
        },
        "recipe": {k: v for k, v in asdict(config).items() if k not in ("mura_root", "out", "fracatlas")} | {
            "optimizer": "AdamW", "schedule": "one-cycle",
            "loss": ("BCE on each study's mean view probability" if config.study_loss else "BCE on each image")
                    + ", weighted per study type (MURA paper)",
            "class_weights": {t: {"abnormal": round(a, 4), "normal": round(n, 4)}
                              for t, (a, n) in class_weights.items()},
            "augmentation": f"lateral flip, rotation up to ±{config.rotation:g}°, scale 0.9-1.15, shift ±6%, "
                            "brightness/contrast ±20%",
            "test_time_augmentation": "mean of the image and its lateral flip",
            "selection": "epoch with the best holdout study AUROC",
        },
        "training_time_seconds": round(elapsed),
        "training_machine": _machine_description(config),
        "best_epoch": best_epoch,
        "holdout_metrics": holdout_metrics,
        "thresholds": thresholds,
        "threshold_rule": "maximise study-level Cohen's kappa on the holdout patients of train/",
        "tta": True,
        "limitations": [
            "Trained only on " + " and ".join(t.removeprefix("XR_").lower() for t in config.study_types)
            + " radiographs; other body parts are out of distribution.",
            "MURA's 'abnormal' label includes metal hardware; the model leans on it.",
            "Research and teaching tool; not a medical device and not for diagnosis.",
        ],
    }
    if fracture_fit is not None and fracture_holdout is not None:
        card["training_data"]["fracatlas"] = {
            "source": "FracAtlas upper-limb radiographs (CC BY 4.0), fracture label, on a second output that "
                      "the checkpoint does not keep",
            "fit_images": int(len(fracture_fit)), "fit_fractured": int(fracture_fit["label"].sum()),
            "holdout_images": int(len(fracture_holdout)),
            "split": "copy groups kept whole, same folds and seed as the MURA split",
        }
    return card


def ensemble_card(name: str, arch: str, cards: list[dict[str, Any]], *, cross_validated: bool,
                  holdout: pd.DataFrame, thresholds: dict[str, float],
                  holdout_metrics: dict[str, dict]) -> dict[str, Any]:
    """The card of a mean-probability ensemble of ``arch`` members whose cards are ``cards`` (core.ensemble)."""
    base = cards[0]
    card = base | {
        "name": name,
        "description": f"Mean-probability ensemble of {len(cards)} {arch} models "
                       + ("(one per fold of a patient-level cross-validation of train/). " if cross_validated
                          else "(different seeds). ")
                       + base["description"],
        "members": [
            {"seed": member["recipe"]["seed"], **({"fold": member["recipe"]["fold"]} if cross_validated else {}),
             "best_epoch": member["best_epoch"], "training_time_seconds": member["training_time_seconds"],
             "holdout_metrics": member["holdout_metrics"]}
            for member in cards
        ],
        "training_time_seconds": sum(member["training_time_seconds"] for member in cards),
        "holdout_metrics": holdout_metrics,
        "thresholds": thresholds,
    }
    del card["best_epoch"]
    # The members' own settings where they differ; everything else is the same for every member.
    card["recipe"] = base["recipe"] | {"seed": [member["recipe"]["seed"] for member in cards]}
    if cross_validated:
        recipe = card["recipe"]
        recipe["fold"] = [member["recipe"]["fold"] for member in cards]
        training_data = {k: v for k, v in base["training_data"].items() if k != "fit"}
        card["training_data"] = training_data | {
            "holdout": subset_counts(holdout),
            "split": f"{kfold_description(recipe['folds'], recipe['split_seed'])}; one member per fold, each "
                     f"trained on the other folds; holdout = out-of-fold predictions; {NEVER_VALID}",
        }
        card["threshold_rule"] = ("maximise study-level Cohen's kappa on the out-of-fold predictions of train/ "
                                  "(each study predicted by the member that never saw its patient)")
    return card
