"""One home for the files of a model folder: where each artefact lives and how a cached
evaluation is written and read as one consistent pair.

Design notes: docs/architecture.md, "Model folder files".

Example:
    >>> files = ModelArtifacts.of("mura_efficientnet_lite0")  # doctest: +SKIP
    >>> evaluation = read_evaluation(files, "valid")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pandas as pd

from core.store import atomic

__all__ = [
    "printable",
    "report_written",
    "read_json_object",
    "CachePairError",
    "CachedPair",
    "SHIPPED_WEIGHTS_DIR",
    "CHECKPOINT_FILE",
    "CARD_FILE",
    "TRAINING_LOG_FILE",
    "TRAIN_STATE_FILE",
    "SCOPE_HEAD_FILE",
    "SCOPE_METRICS_FILE",
    "EMBEDDINGS_FILE",
    "EMBEDDING_FEATURES_FILE",
    "LABEL_ISSUES_FILE",
    "DUPLICATES_FILE",
    "DATA_AUDIT_FILE",
    "TRUST_ROWS_FILE",
    "TRUST_SUMMARY_FILE",
    "BEFORE_AFTER_GALLERY_FILE",
    "TRAIN_HOLDOUT",
    "BASE_MODEL_KEY",
    "MURA_PATH_FILES",
    "is_model_name",
    "weights_dir",
    "file_version",
    "display_name",
    "ModelArtifacts",
    "Evaluation",
    "EvaluationMismatchError",
    "SmallerEvaluationError",
    "check_replacement",
    "write_evaluation",
    "read_evaluation",
    "read_pair",
    "write_pair",
]

SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
CHECKPOINT_FILE = "checkpoint.pt"
CARD_FILE = "model_card.json"
TRAINING_LOG_FILE = "training_log.csv"
TRAIN_STATE_FILE = "train_state.pt"
SCOPE_HEAD_FILE = "scope_head.npz"
SCOPE_METRICS_FILE = "scope_metrics.json"
EMBEDDINGS_FILE = "embeddings.npz"
EMBEDDING_FEATURES_FILE = "embedding_features.npz"
LABEL_ISSUES_FILE = "label_issues.csv"
DUPLICATES_FILE = "duplicates.csv"
DATA_AUDIT_FILE = "data_audit.json"
TRUST_ROWS_FILE = "trust_metrics.csv"
TRUST_SUMMARY_FILE = "trust_metrics.json"
BEFORE_AFTER_GALLERY_FILE = "before_after_gallery.npz"
#: The dataset name of the predictions on train/'s held-out patients (core.train, core.ensemble).
TRAIN_HOLDOUT = "train_holdout"
_PREDICTIONS_HASH_KEY = "predictions_sha256"
#: The card field naming the model whose MURA network a model's is (the fracture model's base ensemble).
BASE_MODEL_KEY = "base_model"
#: Artefacts of the MURA network alone (scope, train holdout, training log, data map): a model built on
#: a base model reads the base's when it has no copy of its own (:meth:`ModelArtifacts.resolve`).
MURA_PATH_FILES = frozenset(
    {
        SCOPE_HEAD_FILE,
        SCOPE_METRICS_FILE,
        f"predictions_{TRAIN_HOLDOUT}.csv",
        TRAINING_LOG_FILE,
        EMBEDDINGS_FILE,
        EMBEDDING_FEATURES_FILE,
        DATA_AUDIT_FILE,
        DUPLICATES_FILE,
        LABEL_ISSUES_FILE,
        # The abnormal output's sanity checks: the same network, layers and names as the base's.
        TRUST_ROWS_FILE,
        TRUST_SUMMARY_FILE,
    }
)


def weights_dir() -> Path:
    """Where model folders live: MURA_LENS_WEIGHTS_DIR if set (tests, extra models), else weights/."""
    return Path(os.environ.get("MURA_LENS_WEIGHTS_DIR") or SHIPPED_WEIGHTS_DIR)


def file_version(path: Path) -> int:
    """The cache key of a file's content version: its modification time in nanoseconds, 0 if absent.

    One definition for every cache (models, tables, JSON), so a rewritten file is picked up
    everywhere at once.
    """
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def display_name(path: Path) -> str:
    """``<model folder>/<file>``: how messages name a model file (no server path shown to users)."""
    return f"{path.parent.name}/{path.name}"


def is_model_name(name: str) -> bool:
    """Whether ``name`` can be a folder under the weights directory (no path separator, no leading dot)."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _per_target(file_name: str, target: str) -> str:
    """``trust_metrics.csv`` for the abnormal output (the name before models had two), else
    ``trust_metrics_<target>.csv``."""
    if target not in ("abnormal", "fracture"):
        raise ValueError(f"trust caches exist per output (abnormal, fracture), not for {target!r}")
    if target == "abnormal":
        return file_name
    stem, suffix = file_name.rsplit(".", 1)
    return f"{stem}_{target}.{suffix}"


@dataclass(frozen=True)
class ModelArtifacts:
    """The paths of one model folder; creating it touches no file.

    The path properties name this folder's own files (what writers write); readers of a MURA-path
    artefact go through :meth:`resolve`, which falls back on the base model's copy.
    """

    directory: Path

    @classmethod
    def of(cls, model: str, weights_root: Path | None = None) -> ModelArtifacts:
        """The folder of ``model`` under ``weights_root`` (default :func:`weights_dir`)."""
        return cls((weights_root or weights_dir()) / model)

    @property
    def name(self) -> str:
        """The model's name: its folder's base name, as the sidebar and the CLIs spell it."""
        return self.directory.name

    @property
    def checkpoint(self) -> Path:
        """The weights (``checkpoint.pt``) that core.model.registry loads; core.train and core.ensemble write it."""
        return self.directory / CHECKPOINT_FILE

    @property
    def card(self) -> Path:
        """The model card (``model_card.json``): recipe, per-body-part thresholds and holdout metrics."""
        return self.directory / CARD_FILE

    @property
    def training_log(self) -> Path:
        """Per-epoch CSV of loss and holdout AUROC from core.train, plotted on the Model card page."""
        return self.directory / TRAINING_LOG_FILE

    @property
    def train_state(self) -> Path:
        """core.train's resume point: weights, optimiser, scheduler and RNG states after the last epoch."""
        return self.directory / TRAIN_STATE_FILE

    @property
    def holdout_predictions(self) -> Path:
        """Predictions on train/'s held-out patients: what thresholds and ensembles are chosen on."""
        return self.predictions(TRAIN_HOLDOUT)

    def predictions(self, dataset: str) -> Path:
        """Cached per-image probabilities on ``dataset``, so pages need not rerun the model."""
        return self.directory / f"predictions_{_checked(dataset)}.csv"

    def metrics(self, dataset: str) -> Path:
        """Cached metrics JSON of ``dataset``, written together with its :meth:`predictions`."""
        return self.directory / f"metrics_{_checked(dataset)}.json"

    def localization(self, dataset: str) -> Path:
        """Per-image CAM localisation scores on ``dataset``: core.localize's rows, kept so a sweep resumes."""
        return self.directory / f"localization_{_checked(dataset)}.csv"

    def localization_summary(self, dataset: str) -> Path:
        """Per-map summary of :meth:`localization` with bootstrap intervals, read by the Heat-map accuracy page."""
        return self.directory / f"localization_{_checked(dataset)}.json"

    def trust_rows(self, target: str = "abnormal") -> Path:
        """Per-image sanity checks and faithfulness of each CAM method and layer (core.trust) explaining
        ``target`` ("abnormal" or "fracture": one cache per output), kept to resume."""
        return self.directory / _per_target(TRUST_ROWS_FILE, target)

    def trust_summary(self, target: str = "abnormal") -> Path:
        """The summary of :meth:`trust_rows` with CIs, verdicts and rankings, read by the dashboard."""
        return self.directory / _per_target(TRUST_SUMMARY_FILE, target)

    @property
    def scope_head(self) -> Path:
        """The fitted scope head (core.scope) that says which body part an image shows and if it is typical."""
        return self.directory / SCOPE_HEAD_FILE

    @property
    def scope_metrics(self) -> Path:
        """core.scope's out-of-fold measurement of :attr:`scope_head`, written beside it."""
        return self.directory / SCOPE_METRICS_FILE

    @property
    def embeddings(self) -> Path:
        """core.embeddings' map cache: 2-D coordinates, shared-space vectors, hashes and study neighbours."""
        return self.directory / EMBEDDINGS_FILE

    @property
    def embedding_features(self) -> Path:
        """The raw out-of-fold penultimate feature of every embedded image (float16), for analyses of one's own."""
        return self.directory / EMBEDDING_FEATURES_FILE

    @property
    def label_issues(self) -> Path:
        """Studies ranked by cleanlab's label quality on out-of-sample probabilities (the review queue)."""
        return self.directory / LABEL_ISSUES_FILE

    @property
    def duplicates(self) -> Path:
        """Near-duplicate image groups within and across splits and datasets (the leakage audit)."""
        return self.directory / DUPLICATES_FILE

    @property
    def data_audit(self) -> Path:
        """Counts of label issues and duplicates, and how the embeddings were made, for the Data map page."""
        return self.directory / DATA_AUDIT_FILE

    @property
    def before_after_gallery(self) -> Path:
        """A fracture-aware model's and its base model's heat maps of a few test images (core.before_after)."""
        return self.directory / BEFORE_AFTER_GALLERY_FILE

    @property
    def base(self) -> ModelArtifacts | None:
        """The model whose MURA network this one's is (the card's ``base_model``, a folder beside this
        one), or None: a model of its own, or no readable card."""
        card = read_json_object(self.card) or {}
        name = card.get(BASE_MODEL_KEY)
        if not isinstance(name, str) or not is_model_name(name) or name == self.name:
            return None
        return ModelArtifacts(self.directory.parent / name)

    @property
    def model_files(self) -> tuple[Path, ...]:
        """The checkpoint and card, and a base model's too (a delta checkpoint loads its members from
        there): what to copy for the model to load from another weights folder."""
        base = self.base
        return (self.checkpoint, self.card) + (() if base is None else (base.checkpoint, base.card))

    def resolve(self, path: Path) -> Path:
        """Where a file of this folder is read from: ``path`` itself when it exists or is not a
        MURA-path artefact (:data:`MURA_PATH_FILES`), else the base model's file of that name
        (the same MURA network made it), else ``path`` (readers then say it is missing)."""
        if path.name not in MURA_PATH_FILES or path.exists():
            return path
        base = self.base
        return base.directory / path.name if base is not None and (base.directory / path.name).exists() else path

    def evaluation_version(self, dataset: str) -> tuple[str, int, int]:
        """The cache key of the cached evaluation of ``dataset``: folder and both files' versions."""
        return str(self.directory), file_version(self.predictions(dataset)), file_version(self.metrics(dataset))


def _checked(dataset: str) -> str:
    """A dataset name is part of a file name: letters, digits and underscores only."""
    if not dataset or not all(c.isalnum() or c == "_" for c in dataset):
        raise ValueError(f"{dataset!r} is not a dataset name (letters, digits and underscores only).")
    return dataset


class CachePairError(ValueError):
    """A cached table and its summary are unreadable or come from different runs (one sentence)."""


class EvaluationMismatchError(CachePairError):
    """The cached predictions and metrics of a dataset come from different runs."""


class SmallerEvaluationError(ValueError):
    """A new evaluation covers fewer images than the cached one it would replace."""


@dataclass(frozen=True)
class Evaluation:
    """A cached evaluation whose predictions and metrics are known to belong together."""

    predictions: pd.DataFrame
    metrics: dict


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _cached_images(path: Path) -> int:
    """Rows of a cached predictions file; 0 when it is absent or unreadable (nothing worth keeping)."""
    try:
        return len(pd.read_csv(path, usecols=[0]))
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError):
        return 0


def check_replacement(files: ModelArtifacts, dataset: str, images: int, *, force: bool = False) -> None:
    """Refuse to replace a cached evaluation of more images by one of ``images`` unless ``force``.

    Called before a long run (so it fails at once) and again by :func:`write_evaluation`.
    """
    cached = _cached_images(files.predictions(dataset))
    if images < cached and not force:
        raise SmallerEvaluationError(
            f"{display_name(files.predictions(dataset))} holds {cached} images and this evaluation only {images}; "
            "pass --force to replace it with the smaller one."
        )


def write_evaluation(
    files: ModelArtifacts, dataset: str, predictions: pd.DataFrame, metrics: dict, *, force: bool = False
) -> tuple[Path, Path]:
    """Write predictions, then metrics naming the predictions' hash: a reader never accepts a mix.

    Raises:
        SmallerEvaluationError: the cached predictions cover more images and ``force`` is False.
        atomic.AtomicWriteError: a file could not be written (disk full...); no temporary file is left.
    """
    check_replacement(files, dataset, len(predictions), force=force)
    predictions_path, metrics_path = files.predictions(dataset), files.metrics(dataset)
    write_pair(
        predictions_path,
        metrics_path,
        predictions.to_csv(index=False, float_format="%.6f"),
        metrics,
        hash_key=_PREDICTIONS_HASH_KEY,
    )
    return predictions_path, metrics_path


@dataclass(frozen=True)
class CachedPair:
    """A cached table and the JSON summary computed from exactly that table (its text's SHA-256)."""

    table: pd.DataFrame
    summary: dict


def write_pair(table_path: Path, summary_path: Path, table_text: str, summary: dict, *, hash_key: str) -> None:
    """Write the table, then the summary naming the table's hash: a reader never accepts a mix.

    Raises:
        atomic.AtomicWriteError: a file could not be written (disk full...); no temporary file is left.
    """
    atomic.write_text(table_path, table_text)
    atomic.write_text(
        summary_path, json.dumps({**summary, hash_key: _sha256(table_text)}, indent=2, allow_nan=False) + "\n"
    )


def read_pair(
    table_path: Path,
    summary_path: Path,
    *,
    hash_key: str,
    remedy: str,
    mismatch: str,
    parse: Callable[[StringIO], pd.DataFrame] = pd.read_csv,
    hash_required: bool = True,
    error: type[CachePairError] = CachePairError,
) -> CachedPair | None:
    """The table and summary :func:`write_pair` wrote, or None when either file is absent.

    ``remedy`` ends the unreadable-file sentence ("re-run the evaluation"); ``mismatch`` is the whole
    sentence for a table that is not the one summarised. Summaries written before hashes existed
    pass when ``hash_required`` is False.

    Raises:
        error: the files are unreadable, the summary is not an object, or the hashes differ.
    """
    if not table_path.is_file() or not summary_path.is_file():
        return None
    try:
        text = table_path.read_text(encoding="utf-8")
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        table = parse(StringIO(text))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, pd.errors.ParserError) as exc:
        raise error(
            f"The cached {summary_path.name} / {table_path.name} cannot be read ({type(exc).__name__}); {remedy}."
        ) from exc
    if not isinstance(summary, dict):
        raise error(f"{summary_path.name} is not a JSON object; {remedy}.")
    expected = summary.get(hash_key)
    if (expected is not None or hash_required) and expected != _sha256(text):
        raise error(mismatch)
    return CachedPair(table, summary)


def read_evaluation(files: ModelArtifacts, dataset: str) -> Evaluation | None:
    """The cached evaluation of ``dataset``, or None when either file is absent.

    Raises:
        EvaluationMismatchError: the pair is inconsistent or unreadable (message: one sentence).
    """
    predictions_path, metrics_path = files.predictions(dataset), files.metrics(dataset)
    pair = read_pair(
        predictions_path,
        metrics_path,
        hash_key=_PREDICTIONS_HASH_KEY,
        remedy="re-run the evaluation",
        mismatch=f"{predictions_path.name} and {metrics_path.name} come from different runs; re-run the evaluation.",
        hash_required=False,
        error=EvaluationMismatchError,
    )
    return None if pair is None else Evaluation(pair.table, pair.summary)


#: What a terminal acts on: C0 controls (ESC, CR, LF, ...), DEL, C1 controls; and lone surrogates
#: (the undecodable bytes of a file name), which are not text.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: object) -> str:
    """``text`` as one inert terminal line: control characters shown escaped (``\\x1b``), undecodable
    bytes as U+FFFD, so a file name or a CSV cell on stderr cannot recolour, erase or forge lines."""
    return _UNPRINTABLE.sub(lambda m: "\ufffd" if m.group() >= "\ud800" else f"\\x{ord(m.group()):02x}", str(text))


def report_written(write: Callable[[], Iterable[Path]], errors: tuple[type[Exception], ...]) -> int:
    """End of a CLI that writes artefacts: run ``write``, print ``wrote PATH`` for each file it returns
    and exit 0, or print one of ``errors`` as one line (never a traceback) and exit 2."""
    try:
        paths = list(write())
    except errors as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {printable(path)}")
    return 0


def read_json_object(path: Path) -> dict | None:
    """An optional cache's JSON object; None when it is absent or unreadable (readers say so)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        return None
    return value if isinstance(value, dict) else None
