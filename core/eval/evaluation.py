"""Evaluate a shipped model on a MURA split, or on FracAtlas as an external set, and cache the
results for the dashboard.

    python -m core.evaluate --mura-root PATH --split valid [--model NAME] [--n-boot 1000] [--force]
    python -m core.evaluate --dataset fracatlas --root PATH [--model NAME] [--n-boot 1000] [--force]
    ... [--backend onnx|torch] [--device cuda] [--precision bf16] [--workers 6] [--ray | --ray-address ADDR]

writes, as one pair (core.store.artifacts.write_evaluation), ``weights/<model>/predictions_<split>.csv``
(one row per present image, keyed by its official path) and ``metrics_<split>.json`` (image and
study level, overall and per body part, with bootstrap CIs); for FracAtlas,
``predictions_fracatlas.csv`` (one row per image, keyed by its file in the root) and
``metrics_fracatlas.json`` (image level, per region; see :func:`summarise_fracatlas`). A MURA
metrics file also pools the body parts the model was trained on (``"trained"``, :func:`summarise_trained`):
"all body parts" would otherwise mix in the few studies of parts the model never saw.
The dashboard only reads these files. Whatever part of the data is present is evaluated; the
JSON records the coverage. A cached evaluation of more images is not replaced by one of fewer
(a partial copy) without ``--force``. ``--device``, ``--workers`` and ``--ray`` choose where it runs
(core.model.scale); every choice writes the same files, through the same writer. ``--backend`` chooses
what runs the forward passes (core.model.backends): ONNX Runtime by default on a CPU (about 3x faster,
probabilities within 1e-5 of torch's), eager torch with ``--backend torch`` or on a GPU.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from core.data import fracatlas, fracture_split, mura
from core.eval.metrics import DEFAULT_N_BOOT, LEVELS, OVERALL, summarise
from core.model.backends import batch_predictor, onnx_graph, resolve_backend
from core.model.card import DEFAULT_THRESHOLD_KEY, card_thresholds, threshold_for, trained_study_types
from core.model.checkpoint import LoadedModel, load_model
from core.model.devices import autocast, on_device
from core.model.prediction import DEFAULT_BATCH_SIZE
from core.model.registry import FRACTURE
from core.model.scale import LOCAL, Decoder, Engine, local_batches, ray_probabilities
from core.store.artifacts import ModelArtifacts, check_replacement, write_evaluation

__all__ = [
    "FRACTURE_COLUMN",
    "fracture_test_part",
    "fracture_thresholds",
    "summarise_fracture_output",
    "PREDICTION_COLUMNS",
    "FRACATLAS",
    "FRACATLAS_COLUMNS",
    "REGION_THRESHOLDS",
    "REGION_LABELS",
    "FRACATLAS_STRATA",
    "region_thresholds",
    "fracatlas_stratum",
    "predict_split",
    "predict_fracatlas",
    "summarise_fracatlas",
    "summarise_trained",
    "evaluate",
    "evaluate_fracatlas",
]

#: A fracture-aware model's P(fracture) beside ``probability`` (P(abnormal)) in its prediction tables.
FRACTURE_COLUMN = "fracture_probability"
PREDICTION_COLUMNS = ["path", "study_type", "patient", "study", "study_path", "label", "probability"]
#: The dataset name of the FracAtlas evaluation (its files are ``*_fracatlas.*``).
FRACATLAS = "fracatlas"
FRACATLAS_COLUMNS = [
    "file",
    "image_id",
    "region",
    "upper_limb",
    "fractured",
    "fracture_count",
    "hardware",
    "frontal",
    "lateral",
    "oblique",
    "duplicate_of",
    "threshold",
    "probability",
]
#: Which of the model card's thresholds judges each FracAtlas region. The model knows only MURA
#: humerus and forearm: FracAtlas's "hand" covers hand, wrist and forearm views, nearest to a MURA
#: forearm film (which shows the wrist); "shoulder" views show the proximal humerus, as MURA
#: humerus films do; a whole arm ("hand+shoulder") shows both, so it gets the card's single
#: threshold for both parts ("default"). Leg/hip is out of scope and is judged at none.
REGION_THRESHOLDS = {"hand": "XR_FOREARM", "shoulder": "XR_HUMERUS", "hand+shoulder": DEFAULT_THRESHOLD_KEY}
#: FracAtlas's regions as a reader understands them.
REGION_LABELS = {
    "hand": "hand/wrist/forearm",
    "shoulder": "shoulder",
    "hand+shoulder": "whole arm",
    "leg/hip": "leg/hip",
}
#: The upper-limb strata reported apart: MURA calls metal hardware abnormal, FracAtlas does not call
#: it a fracture, so a hardware image without a fracture is a false positive only by FracAtlas's label.
FRACATLAS_STRATA = {
    "all": "every upper-limb image",
    "without_hardware": "upper-limb images without hardware",
    "hardware": "upper-limb images with metal hardware",
}


def region_thresholds(card: dict) -> dict[str, float]:
    """The threshold of each upper-limb region, taken from the model card as REGION_THRESHOLDS says."""
    thresholds = card_thresholds(card)
    return {region: threshold_for(thresholds, key) for region, key in REGION_THRESHOLDS.items()}


def _batches(
    root: Path,
    paths: list[str],
    loaded: LoadedModel,
    batch_size: int,
    locate: Callable[[Path, str], Path] = mura.image_file,
    workers: int = 0,
) -> Iterator[torch.Tensor]:
    """Decode and letterbox the next batch in a background thread (or ``workers`` DataLoader
    processes) while the model runs.

    Pillow's PNG decoder and torch's resize release the GIL, so one prefetch thread hides most
    of the decoding cost behind inference on a laptop; an accelerator needs worker processes.
    """
    prepare = Decoder.of(loaded, root, locate)
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    if workers:
        yield from local_batches(prepare, chunks, workers, pin_memory=_on_gpu(loaded))
        return
    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, chunks[0])
        for next_chunk in chunks[1:]:
            batch = pending.result()
            pending = pool.submit(prepare, next_chunk)
            yield batch
        yield pending.result()


def _on_gpu(loaded: LoadedModel) -> bool:
    """Whether the model runs on a CUDA GPU (then pinned host memory speeds the copies)."""
    return next(loaded.model.parameters()).is_cuda


def predict_split(
    loaded: LoadedModel,
    root: Path,
    split: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    limit: int | None = None,
    engine: Engine = LOCAL,
) -> pd.DataFrame:
    """One row per present image of ``split`` (the first ``limit`` only, for benchmarks):
    official path, metadata, label, probability."""
    images = mura.read_images(root, split).iloc[:limit]
    probability = _predict_files(
        loaded,
        root,
        images["path"].tolist(),
        mura.image_file,
        batch_size=batch_size,
        progress=progress,
        description=f"{loaded.name} on {split}",
        engine=engine,
    )
    return _with_probabilities(images, probability)[[*PREDICTION_COLUMNS, *_fracture_column(loaded)]]


def _fracture_column(loaded: LoadedModel) -> list[str]:
    """The prediction tables' extra column for a model with a fracture output."""
    return [FRACTURE_COLUMN] if FRACTURE in loaded.outputs else []


def _with_probabilities(images: pd.DataFrame, probability: np.ndarray) -> pd.DataFrame:
    """``images`` with ``probability`` (P(abnormal)) and, from a second output, ``fracture_probability``."""
    images = images.assign(probability=probability[:, 0])
    if probability.shape[1] > 1:
        images[FRACTURE_COLUMN] = probability[:, 1]
    return images


def _predict_files(
    loaded: LoadedModel,
    root: Path,
    files: list[str],
    locate: Callable[[Path, str], Path],
    *,
    batch_size: int,
    progress: bool,
    description: str,
    engine: Engine = LOCAL,
) -> np.ndarray:
    """(files, outputs) probabilities (column 0 P(abnormal)), rounded once here so the cached CSV and every
    metric from it agree;
    on ``engine``'s device and backend, or on Ray, where the batches and so the numbers are the same."""
    backend = _backend(engine)
    if not files:
        return np.empty((0, len(loaded.outputs)))
    if engine.ray:
        onnx_model = onnx_graph(loaded)[1] if backend == "onnx" else None
        return np.round(
            ray_probabilities(
                loaded,
                Decoder.of(loaded, root, locate),
                files,
                batch_size=batch_size,
                engine=engine,
                progress=progress,
                description=description,
                onnx_model=onnx_model,
            ),
            6,
        )
    device = engine.torch_device
    loaded = on_device(loaded, device)
    predict = batch_predictor(loaded, backend)
    probabilities = []
    with (
        tqdm(total=len(files), desc=description, unit="img", disable=not progress) as bar,
        autocast(device, engine.precision),
    ):
        for batch in _batches(root, files, loaded, batch_size, locate, engine.workers):
            probabilities.append(predict(batch))
            bar.update(len(batch))
    return np.round(np.concatenate(probabilities), 6)


def _backend(engine: Engine) -> str:
    """The backend ``engine`` asks for where it applies, else torch, with one line on stderr saying why."""
    backend, reason = resolve_backend(engine.backend, engine.device)
    if reason:
        print(f"note: {reason}", file=sys.stderr, flush=True)
    return backend


def predict_fracatlas(
    loaded: LoadedModel,
    root: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    limit: int | None = None,
    engine: Engine = LOCAL,
) -> pd.DataFrame:
    """One row per present image of a FracAtlas root (the first ``limit`` only, for tests):
    FRACATLAS_COLUMNS, with ``duplicate_of`` naming the first copy of the same radiograph and
    ``threshold`` the card's threshold for its region (empty for leg/hip, which is out of scope)."""
    images = fracatlas.read_images(root).iloc[:limit].reset_index(drop=True)
    files = images["file"].astype(str).tolist()
    probability = _predict_files(
        loaded,
        root,
        files,
        fracatlas.image_file,
        batch_size=batch_size,
        progress=progress,
        description=f"{loaded.name} on FracAtlas",
        engine=engine,
    )
    for flag in ("frontal", "lateral", "oblique", "fracture_count"):
        if flag not in images.columns:
            images[flag] = 0
    if "image_id" not in images.columns:
        images["image_id"] = [Path(f).name for f in files]
    images = images.assign(
        duplicate_of=fracatlas.duplicate_groups(root, files),
        threshold=images["region"].map(region_thresholds(loaded.card)),
    )
    return _with_probabilities(images, probability)[[*FRACATLAS_COLUMNS, *_fracture_column(loaded)]]


def fracatlas_stratum(predictions: pd.DataFrame, stratum: str = "all") -> pd.DataFrame:
    """The upper-limb rows of one of FRACATLAS_STRATA in core.eval.metrics' shape, every column kept:
    region as ``study_type``, fracture as ``label``, and the copies of one radiograph as one
    ``study_path``, so a bootstrap resamples radiographs, not files."""
    if stratum not in FRACATLAS_STRATA:
        raise ValueError(f"Unknown stratum {stratum!r}; use one of {', '.join(FRACATLAS_STRATA)}.")
    rows = predictions[predictions["upper_limb"].astype(bool)]
    if stratum != "all":
        rows = rows[rows["hardware"] == (1 if stratum == "hardware" else 0)]
    group = rows["duplicate_of"].astype(str)
    return rows.assign(
        study_type=rows["region"], label=rows["fractured"].astype(int), patient=group, study=group, study_path=group
    ).reset_index(drop=True)


def _score_distribution(probability: pd.Series, threshold: float) -> dict[str, object]:
    """Quantiles of the scores and the share called abnormal: what can be said without a valid label."""
    values = probability.to_numpy(dtype=float)
    if values.size == 0:
        return {"n": 0}
    quantiles = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {
        "n": int(values.size),
        "mean": round(float(values.mean()), 6),
        "quantiles": dict(
            zip(("p10", "p25", "p50", "p75", "p90"), (round(float(q), 6) for q in quantiles), strict=True)
        ),
        "threshold": threshold,
        "share_called_abnormal": round(float((values >= threshold).mean()), 6),
    }


def summarise_fracatlas(
    predictions: pd.DataFrame, thresholds: dict[str, float], *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> dict[str, object]:
    """Image-level metrics of a FracAtlas prediction table against its *fracture* label.

    Keys ``all``, ``without_hardware`` and ``hardware`` hold core.eval.metrics.summarise's image level
    for the upper-limb images of that stratum: ``overall`` (every upper-limb image, each at its
    region's threshold) and one entry per region, with bootstrap CIs over radiographs (copies
    resampled together). MURA calls hardware abnormal and FracAtlas does not call it a fracture, so
    hardware is a stratum of its own. ``out_of_scope`` describes leg/hip scores only: the model was
    never shown a leg, so an AUROC there would measure nothing the model claims.
    """
    summary: dict[str, object] = {
        "label": "fracture",
        "thresholds": thresholds,
        "threshold_source": dict(REGION_THRESHOLDS),
        "n_boot": n_boot,
        "seed": seed,
    }
    for name in FRACATLAS_STRATA:
        rows = fracatlas_stratum(predictions, name)
        summary[name] = (
            None if rows.empty else summarise(rows, thresholds, n_boot=n_boot, seed=seed, levels=("image",))["image"]
        )
    leg = predictions[~predictions["upper_limb"].astype(bool)]
    default = thresholds.get("hand+shoulder", 0.5)
    summary["out_of_scope"] = {
        region: {
            **_score_distribution(rows["probability"], default),
            "n_fractured": int(rows["fractured"].sum()),
            "scores_fractured": _score_distribution(rows.loc[rows["fractured"] == 1, "probability"], default),
            "scores_not_fractured": _score_distribution(rows.loc[rows["fractured"] == 0, "probability"], default),
        }
        for region, rows in leg.groupby("region", sort=True)
    }
    return summary


def evaluate_fracatlas(
    model_name: str,
    root: Path,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    batch_size: int = DEFAULT_BATCH_SIZE,
    limit: int | None = None,
    force: bool = False,
    engine: Engine = LOCAL,
) -> tuple[Path, Path]:
    """Predict every image of a FracAtlas root and write predictions_fracatlas.csv and
    metrics_fracatlas.json beside the model's checkpoint (a larger cached one only with ``force``)."""
    loaded = load_model(model_name)
    images = len(fracatlas.read_images(root).iloc[:limit])
    check_replacement(ModelArtifacts(loaded.directory), FRACATLAS, images, force=force)
    started = time.perf_counter()
    predictions = predict_fracatlas(loaded, root, batch_size=batch_size, limit=limit, engine=engine)
    seconds = time.perf_counter() - started
    metrics = summarise_fracatlas(predictions, region_thresholds(loaded.card), n_boot=n_boot)
    split_file = loaded.directory / fracture_split.SPLIT_FILE
    if FRACTURE in loaded.outputs and split_file.is_file():
        metrics["fracture_output"] = summarise_fracture_output(
            predictions, fracture_split.read_split(split_file), float(loaded.card["fracture_threshold"]), n_boot=n_boot
        )
    copies = predictions["duplicate_of"] != predictions["file"]
    metrics["evaluation"] = {
        "model": model_name,
        "dataset": FRACATLAS,
        "root": root.name,
        "images": int(len(predictions)),
        "upper_limb_images": int(predictions["upper_limb"].sum()),
        "regions": {str(k): int(v) for k, v in predictions["region"].value_counts().sort_index().items()},
        "duplicate_copies": int(copies.sum()),
        "seconds": round(seconds, 1),
        "images_per_second": round(len(predictions) / seconds, 2) if seconds else None,
        "torch_threads": torch.get_num_threads(),
        "backend": resolve_backend(engine.backend, engine.device)[0],
    }
    return write_evaluation(ModelArtifacts(loaded.directory), FRACATLAS, predictions, metrics, force=force)


def fracture_test_part(predictions: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """The FracAtlas test part's rows of ``predictions`` with ``probability`` set to P(fracture): the only
    images a fracture output's figures may come from (leg/hip kept; :func:`fracatlas_stratum` drops it).
    A file some member fitted stays out even if the split also lists it in the test part."""
    test = set(split.loc[split["part"] == fracture_split.TEST, "file"]) - fracture_split.trained_files(split)
    rows = predictions[predictions["file"].isin(test)]
    return rows.assign(probability=rows[FRACTURE_COLUMN])


def fracture_thresholds(threshold: float) -> dict[str, float]:
    """The fracture output's one threshold for every upper-limb region (and ``default``), in
    core.eval.metrics' shape: unlike P(abnormal), it was chosen once for all regions."""
    return dict.fromkeys(fracatlas.UPPER_LIMB_REGIONS, threshold) | {DEFAULT_THRESHOLD_KEY: threshold}


def summarise_fracture_output(
    predictions: pd.DataFrame, split: pd.DataFrame, threshold: float, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> dict[str, object]:
    """The fracture output's image-level metrics on the FracAtlas test part only (never trained or
    tuned on), per stratum as :func:`summarise_fracatlas`, each region at the output's one threshold."""
    rows = fracture_test_part(predictions, split)
    thresholds = fracture_thresholds(threshold)
    summary: dict[str, object] = {
        "label": "fracture",
        "output": FRACTURE,
        "part": "FracAtlas test part",
        "images": int(rows["upper_limb"].astype(bool).sum()),
        "threshold": threshold,
        "n_boot": n_boot,
        "seed": seed,
    }
    for name in FRACATLAS_STRATA:
        stratum = fracatlas_stratum(rows, name)
        summary[name] = (
            None
            if stratum.empty
            else summarise(stratum, thresholds, n_boot=n_boot, seed=seed, levels=("image",))["image"]
        )
    return summary


def summarise_trained(
    predictions: pd.DataFrame, thresholds: dict[str, float], card: dict, *, n_boot: int = DEFAULT_N_BOOT
) -> dict[str, object] | None:
    """The body parts the model was trained on, pooled: {"study_types", "image", "study"}, each level
    in :func:`core.eval.metrics.summarise`'s "overall" shape (same resamples and seed); None when the card
    names no trained part present in ``predictions``."""
    trained = [t for t in trained_study_types(card) if t in set(predictions["study_type"])]
    if not trained:
        return None
    pooled = summarise(predictions[predictions["study_type"].isin(trained)], thresholds, n_boot=n_boot, seed=0)
    return {"study_types": trained, **{level: pooled[level][OVERALL] for level in LEVELS}}


def evaluate(
    model_name: str,
    root: Path,
    split: str,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    batch_size: int = DEFAULT_BATCH_SIZE,
    force: bool = False,
    engine: Engine = LOCAL,
) -> tuple[Path, Path]:
    """Predict ``split`` and write predictions and metrics beside the model's checkpoint.

    Refuses (before predicting) to replace a cached evaluation of more images unless ``force``.
    """
    loaded = load_model(model_name)
    files = ModelArtifacts(loaded.directory)
    check_replacement(files, split, len(mura.read_images(root, split)), force=force)
    started = time.perf_counter()
    predictions = predict_split(loaded, root, split, batch_size=batch_size, engine=engine)
    seconds = time.perf_counter() - started
    thresholds = card_thresholds(loaded.card)
    by_type = {t: threshold_for(thresholds, t) for t in predictions["study_type"].unique()}
    metrics = summarise(predictions, by_type, n_boot=n_boot, seed=0)
    trained = summarise_trained(predictions, by_type, loaded.card, n_boot=n_boot)
    if trained is not None:
        metrics["trained"] = trained
    metrics["evaluation"] = {
        "model": model_name,
        "split": split,
        "images": int(len(predictions)),
        "studies": int(predictions["study_path"].nunique()),
        "coverage": mura.coverage(root).query("split == @split").to_dict(orient="records"),
        "thresholds": by_type,
        "seconds": round(seconds, 1),
        "images_per_second": round(len(predictions) / seconds, 2) if seconds else None,
        "torch_threads": torch.get_num_threads(),
        "backend": resolve_backend(engine.backend, engine.device)[0],
    }
    return write_evaluation(files, split, predictions, metrics, force=force)
