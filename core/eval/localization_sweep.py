"""Sweep CAM methods x layers over a FracAtlas folder's outlined fractures and cache how well each
map points at them (``python -m core.localize --root DIR``).

For every upper-limb image with an expert fracture outline, every chosen method at every chosen
layer explains the target output (``target`` column: P(fracture) for a model that has that
output, else P(abnormal), for which the fracture is the abnormal finding), the map is scored against
the union of the image's outlines by :mod:`core.eval.localization`, and so are the two chance-level
maps (rows with method "uniform" and "bright bone" and no layer). Rows go to
``localization_fracatlas.csv`` in the model's folder (which honours ``MURA_LENS_WEIGHTS_DIR``)
and the summary to ``localization_fracatlas.json``, both written atomically; a rerun skips the
rows already there, so a killed sweep resumes. Leg/hip images are out of the model's scope and
left out, and so are images a model's fracture output was trained on (its ``fracatlas_split.csv``:
every figure of such a model comes from its FracAtlas test part, or from images it never had).

``--device cuda`` runs it on a GPU; ``--ray`` (an embedded local Ray) or ``--ray-address ADDR``
(a cluster) spreads the images over an actor pool of Ray Data (core.model.scale), each actor holding the
model once; the driver writes the same files, saving as results arrive, so it resumes the same way.

Default sweep: the fast methods that share one forward/backward pass
(:func:`core.cam.explain.explain_grid`, which costs about as much as one CAM) on each named layer of
the model. EigenCAM and EigenGradCAM (an SVD per layer and member that doubles the sweep's time),
ShapleyCAM (second-order gradients) and the slow methods are opt-in (``--methods``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from io import StringIO
from pathlib import Path
from typing import Any, cast, get_args

import numpy as np
import pandas as pd
from tqdm import tqdm

from core.cam.explain import METHODS, Target, check_target, explain_grid, output_column, shares_a_pass
from core.data import fracatlas, fracture_split
from core.data.imaging import RadiographDecodeError, load_radiograph
from core.eval import localization
from core.eval.evaluation import REGION_THRESHOLDS
from core.model.card import card_thresholds, threshold_for
from core.model.checkpoint import LoadedModel, load_model
from core.model.devices import on_device, resolve_device
from core.model.prediction import configure_threads, predict_image_outputs
from core.model.registry import FRACTURE
from core.model.scale import LOCAL, Engine, ray_map, received
from core.store import atomic
from core.store.artifacts import CachedPair, ModelArtifacts, read_pair, write_pair

__all__ = [
    "DATASET",
    "ROW_COLUMNS",
    "KEY_COLUMNS",
    "default_methods",
    "default_target",
    "default_layers",
    "explained_target",
    "untrained",
    "fractured_images",
    "image_rows",
    "read_rows",
    "read_cache",
    "summary_of",
    "sweep",
]

DATASET = "fracatlas"
KEY_COLUMNS = ["image", "method", "layer", "target"]
ROW_COLUMNS = [
    "image",
    "region",
    "hardware",
    "method",
    "layer",
    "target",
    *localization.SCORE_COLUMNS,
    "otsu_threshold",
    *(localization.grid_column(t) for t in localization.THRESHOLD_GRID),
    "probability",
    "threshold",
    "seconds",
]
# Rows are rewritten to disk after this many images: a killed sweep loses at most these.
_SAVE_EVERY = 10
#: The summary key that holds the SHA-256 of the rows it summarises.
_ROWS_HASH_KEY = "rows_sha256"


#: Fast methods left out of the default sweep, with why (each is opt-in through --methods).
#: Measured on the shipped 4-member ensemble, one thread, all four layers of one image, on the
#: shared 2-core machine: the grid of the other fast methods took 1.2 s, with these two 4.9 s.
_OPT_IN_FAST_METHODS = {
    "EigenCAM": "pytorch_grad_cam's full SVD per layer and member quadruples the sweep's CAM time",
    "EigenGradCAM": "the same SVD, on gradient x activation",
    "ShapleyCAM": "a second-order backward pass per layer: 2 to 60 s per map",
}


def default_methods() -> list[str]:
    """The default sweep: the fast methods that share explain_grid's single pass, less the costly
    ones in ``_OPT_IN_FAST_METHODS``, so the shipped model's sweep fits in 45 minutes on 2 cores."""
    return [name for name in METHODS if shares_a_pass(name) and name not in _OPT_IN_FAST_METHODS]


def fractured_images(root: Path) -> tuple[pd.DataFrame, fracatlas.Outlines]:
    """Upper-limb images of ``root`` with at least one outlined fracture, and the outlines."""
    images = fracatlas.read_images(root)
    outlines = fracatlas.read_outlines(root)
    outlined = set(outlines.files())
    chosen = images[images["upper_limb"] & (images["fractured"] == 1) & images["file"].isin(outlined)]
    return chosen.reset_index(drop=True), outlines


def _threshold(loaded: LoadedModel, region: str, target: Target) -> float:
    """The threshold that judges "model right" on a region: the fracture output's own, else
    core.evaluate's table for P(abnormal), as the external evaluation."""
    if target == FRACTURE:
        return float(loaded.card["fracture_threshold"])
    return threshold_for(card_thresholds(loaded.card), REGION_THRESHOLDS.get(region))


def default_target(outputs: Sequence[str]) -> Target:
    """What a sweep (and a page showing one) explains when none is named, given a model's outputs: the
    fracture output where the model has one."""
    return FRACTURE if FRACTURE in outputs else "abnormal"


def explained_target(rows: pd.DataFrame) -> Target | None:
    """The output a cache's maps explain (the ``target`` of its map rows, not the chance baselines'), or
    None for rows without maps or with maps of several outputs: a figure of one output's maps says
    nothing of another's, so every reader of a cache asks this before it pairs the cache with anything."""
    maps = rows.loc[~rows["method"].isin(localization.BASELINES), "target"].astype(str).unique()
    return cast(Target, maps[0]) if len(maps) == 1 and maps[0] in get_args(Target) else None


def default_layers(loaded: LoadedModel, target: Target) -> list[str]:
    """Every named layer on the explained output's path: a layer off it has no gradient for that
    output, and its flat maps would only crowd the ranking."""
    return loaded.config.layers_for(target)


def untrained(loaded: LoadedModel, images: pd.DataFrame) -> pd.DataFrame:
    """``images`` less those the model's fracture output was trained on (its split file's folds)."""
    path = loaded.directory / fracture_split.SPLIT_FILE
    if not path.is_file():
        return images
    trained = fracture_split.trained_files(fracture_split.read_split(path))
    return images[~images["file"].isin(trained)].reset_index(drop=True)


def image_rows(
    loaded: LoadedModel,
    pixels: np.ndarray,
    mask: np.ndarray,
    *,
    methods: Sequence[str],
    layers: Sequence[str],
    target: Target = "abnormal",
    with_baselines: bool = True,
) -> list[dict[str, object]]:
    """Score rows of one image: each (method, layer) map, then the chance-level maps.

    Raises:
        ValueError: the outline mask does not match the image's size, or outlines nothing.
    """
    if mask.shape != pixels.shape:
        raise ValueError(
            f"its outlines are drawn on a {mask.shape[1]}x{mask.shape[0]} image, "
            f"but the file is {pixels.shape[1]}x{pixels.shape[0]}"
        )
    rows: list[dict[str, object]] = []
    region = localization.tolerance_region(mask)
    if methods:
        for (method, layer), explanation in explain_grid(
            loaded, pixels, methods=methods, layers=layers, target=target
        ).items():
            scores = localization.score_map(explanation.heatmap, mask, region=region)
            rows.append({"method": method, "layer": layer, "target": target, **scores.as_row()})
    if with_baselines:
        for name, heatmap in localization.baseline_maps(pixels).items():
            scores = localization.score_map(heatmap, mask, region=region)
            rows.append({"method": name, "layer": "", "target": "", **scores.as_row()})
    return rows


def read_rows(path: Path) -> pd.DataFrame:
    """Cached rows, or an empty table with the row columns; layer and target as text ("" = none)."""
    if not path.is_file():
        return pd.DataFrame(columns=ROW_COLUMNS)
    return _parse_rows(path, path.name)


_TEXT_COLUMNS = ("image", "region", "method", "layer", "target")


def _parse_rows(source: Path | StringIO, name: str) -> pd.DataFrame:
    rows = pd.read_csv(
        source,
        keep_default_na=False,
        dtype={c: str for c in _TEXT_COLUMNS},
        na_values={c: [""] for c in ROW_COLUMNS if c not in _TEXT_COLUMNS},
    )
    missing = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {', '.join(missing)}; move it away and re-run.")
    return rows[ROW_COLUMNS]


def read_cache(files: ModelArtifacts) -> CachedPair | None:
    """The cached sweep of ``files``' model (rows as ``table``, and their summary), or None before the
    first finished sweep.

    Raises:
        CachePairError: unreadable files, or rows that are not the ones summarised (a sweep
        stopped between its periodic saves and its final summary, a hand edit).
    """
    rows_path, summary_path = files.localization(DATASET), files.localization_summary(DATASET)
    return read_pair(
        rows_path,
        summary_path,
        hash_key=_ROWS_HASH_KEY,
        remedy="re-run python -m core.localize",
        mismatch=f"{rows_path.name} is not the table {summary_path.name} summarises (a sweep still "
        "running or stopped early); finish it with python -m core.localize.",
        parse=lambda text: _parse_rows(text, rows_path.name),
    )


def _rows_text(rows: pd.DataFrame) -> str:
    ordered = rows.sort_values(KEY_COLUMNS, kind="stable")[ROW_COLUMNS].infer_objects()
    return ordered.to_csv(index=False, float_format="%.6g")


def summary_of(rows: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> dict[str, object]:
    """The summary JSON of a rows table: localization.summarise plus how long the sweep took."""
    return {
        "dataset": DATASET,
        **localization.summarise(rows, n_boot=n_boot, seed=seed),
        "sweep_seconds": round(float(rows["seconds"].sum()), 1),
    }


def _write(files: ModelArtifacts, rows: pd.DataFrame, *, n_boot: int | None = None) -> None:
    """Write the rows; with ``n_boot``, then the summary of the rows as written (rounded) and their hash."""
    text = _rows_text(rows)
    if n_boot is None:
        atomic.write_text(files.localization(DATASET), text)
    else:
        write_pair(
            files.localization(DATASET),
            files.localization_summary(DATASET),
            text,
            summary_of(_parse_rows(StringIO(text), DATASET), n_boot=n_boot),
            hash_key=_ROWS_HASH_KEY,
        )


def sweep(
    model_name: str,
    root: Path,
    *,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    target: Target | None = None,
    limit: int | None = None,
    n_boot: int = 1000,
    progress: bool = True,
    engine: Engine = LOCAL,
) -> tuple[Path, Path]:
    """Score the missing (image, method, layer) rows of ``root``'s outlined fractures; write both files.
    ``target`` None explains :func:`default_target`.

    Raises:
        fracatlas.FracAtlasError, ModelLoadError, ValueError: one-sentence reasons.
    """
    loaded = load_model(model_name)
    target = target or default_target(loaded.outputs)
    check_target(loaded, target)
    methods = list(dict.fromkeys(methods or default_methods()))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown CAM method(s) {', '.join(unknown)}; choose from: {', '.join(METHODS)}.")
    layers = list(dict.fromkeys(layers or default_layers(loaded, target)))
    unknown = [layer for layer in layers if layer not in loaded.cam_layers]
    if unknown:
        raise ValueError(
            f"Unknown layer(s) {', '.join(map(repr, unknown))} for {model_name}; "
            f"choose from: {', '.join(map(repr, loaded.cam_layers))}."
        )
    images, outlines = fractured_images(root)
    images = untrained(loaded, images)
    if limit is not None:
        images = images.head(limit)
    if images.empty:
        raise ValueError(f"{root} has no upper-limb image with an outlined fracture.")
    files = ModelArtifacts.of(model_name)
    rows = read_rows(files.localization(DATASET))
    done = set(map(tuple, rows[KEY_COLUMNS].astype(str).to_numpy()))
    work = []
    for image in images.itertuples(index=False):
        wanted = {(m, layer if METHODS[m].uses_layers else "") for m in methods for layer in layers}
        missing = sorted(pair for pair in wanted if (image.file, *pair, target) not in done)
        with_baselines = (image.file, localization.UNIFORM, "", "") not in done
        if missing or with_baselines:
            work.append(
                {
                    "file": image.file,
                    "region": image.region,
                    "hardware": int(image.hardware),
                    "missing": ["\t".join(pair) for pair in missing],
                    "with_baselines": with_baselines,
                }
            )
    new_rows: list[dict[str, object]] = []
    unsaved = 0
    with tqdm(
        total=len(images), initial=len(images) - len(work), desc="Localisation", unit="image", disable=not progress
    ) as bar:
        for file, scored in _scored(
            loaded, root, outlines, work, methods=methods, layers=layers, target=target, engine=engine
        ):
            bar.update(1)
            if isinstance(scored, str):
                tqdm.write(f"skipped {file}: {scored}", file=sys.stderr)
                continue
            new_rows += scored
            unsaved += 1
            if unsaved >= _SAVE_EVERY:
                rows = pd.concat([rows, pd.DataFrame(new_rows, columns=ROW_COLUMNS)], ignore_index=True)
                new_rows, unsaved = [], 0
                _write(files, rows)
    if new_rows:
        rows = pd.concat([rows, pd.DataFrame(new_rows, columns=ROW_COLUMNS)], ignore_index=True)
    _write(files, rows, n_boot=n_boot)
    return files.localization(DATASET), files.localization_summary(DATASET)


def _image_work(
    loaded: LoadedModel,
    root: Path,
    outlines: fracatlas.Outlines,
    item: dict[str, Any],
    *,
    methods: Sequence[str],
    layers: Sequence[str],
    target: Target,
) -> list[dict[str, object]]:
    """The new rows of one work item (an image and its missing (method, layer) pairs).

    Raises:
        RadiographDecodeError, OSError, ValueError: the image or its outlines cannot be used.
    """
    started = time.perf_counter()
    missing = {tuple(pair.split("\t")) for pair in item["missing"]}
    pixels = load_radiograph(fracatlas.image_file(root, item["file"])).pixels
    mask = outlines.mask(item["file"])
    todo = [m for m in methods if any(pair[0] == m for pair in missing)]
    scored = image_rows(
        loaded, pixels, mask, methods=todo, layers=layers, target=target, with_baselines=bool(item["with_baselines"])
    )
    probability = float(predict_image_outputs(loaded, [pixels])[0, output_column(target)])
    kept = [
        row for row in scored if row["method"] in localization.BASELINES or (row["method"], row["layer"]) in missing
    ]
    # The image's time, shared among the rows it produced: their sum is the sweep's time.
    seconds = (time.perf_counter() - started) / max(1, len(kept))
    return [
        {
            "image": item["file"],
            "region": item["region"],
            "hardware": int(item["hardware"]),
            **row,
            "probability": probability,
            "threshold": _threshold(loaded, item["region"], target),
            "seconds": seconds,
        }
        for row in kept
    ]


def _scored(
    loaded: LoadedModel,
    root: Path,
    outlines: fracatlas.Outlines,
    work: list[dict[str, Any]],
    *,
    methods: Sequence[str],
    layers: Sequence[str],
    target: Target,
    engine: Engine,
) -> Iterator[tuple[str, list[dict[str, object]] | str]]:
    """(file, its rows, or why it was skipped) for each work item: here, in order, on ``engine``'s
    device; or on Ray, as the actors finish them."""
    if not engine.ray:
        loaded = on_device(loaded, engine.torch_device)
        for item in work:
            try:
                yield (
                    item["file"],
                    _image_work(loaded, root, outlines, item, methods=methods, layers=layers, target=target),
                )
            except (RadiographDecodeError, OSError, ValueError) as exc:
                yield item["file"], str(exc)
        return
    if not work:
        return
    kwargs = {
        "loaded": loaded,
        "root": root,
        "methods": list(methods),
        "layers": list(layers),
        "target": target,
        "device": engine.device,
    }
    for frame in ray_map(engine, work, _SweepActor, kwargs):
        for file, group in frame.groupby("image", sort=False):
            errors = group["error"][group["error"] != ""]
            yield str(file), (str(errors.iloc[0]) if len(errors) else group[ROW_COLUMNS].to_dict(orient="records"))


class _SweepActor:
    """A Ray Data actor of the sweep: the model (once, from the object store) and the outlines."""

    def __init__(
        self, loaded: Any, root: Path, methods: list[str], layers: list[str], target: Target, device: str
    ) -> None:
        configure_threads(1)
        self.loaded = on_device(received(loaded), resolve_device(device))
        self.root, self.outlines = root, fracatlas.read_outlines(root)
        self.methods, self.layers, self.target = methods, layers, target

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """One work item in; its rows out, or one row whose ``error`` says why it was skipped."""
        out = []
        for item in batch.to_dict(orient="records"):
            try:
                out += [
                    row | {"error": ""}
                    for row in _image_work(
                        self.loaded,
                        self.root,
                        self.outlines,
                        item,
                        methods=self.methods,
                        layers=self.layers,
                        target=self.target,
                    )
                ]
            except (RadiographDecodeError, OSError, ValueError) as exc:
                out.append({"image": item["file"], "error": str(exc) or type(exc).__name__})
        return pd.DataFrame(out, columns=[*ROW_COLUMNS, "error"])
