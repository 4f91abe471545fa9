"""Before and after: a model that learned MURA's abnormal label beside the fracture-aware model built on it,
scored on the same outlined fractures of FracAtlas's fixed test part.

The pair is found from the cards: a model with a fracture output names its base model in its card (the
``base_model`` of its fracture recipe). The images are those of the fracture-aware model's localisation cache
in its split's fixed test part (core.localize keeps the cache to it; an image its fracture output trained on
is never compared); the base model's cache rows are cut to exactly those images. Each model is scored on
(a) the map it opens on (GradCAM at the model's default layer for the output its cache explains) and (b) the
map with the highest hit rate among those its randomisation check passes, where core.trust has checked that
output. Hit rate and energy inside come with
95% bootstrap intervals, and so do their paired differences (after minus before): every resample draws the
same copy groups for both models, so what the images share (which fractures are hard) cancels.

A small gallery file (``python -m core.before_after``) keeps both models' opening maps of a few images,
chosen by a fixed rule, so the page draws them without running either model.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.cam.explain import DEFAULT_METHOD, Target, explain
from core.data import fracatlas, fracture_split
from core.data.imaging import load_radiograph
from core.eval import localization, localization_sweep, metrics, trust
from core.model.card import ModelCardError, read_card
from core.model.checkpoint import list_shipped_models, load_model
from core.model.registry import FRACTURE, ModelLoadError, get_config
from core.store import atomic
from core.store.artifacts import CachePairError, ModelArtifacts

__all__ = [
    "BEFORE",
    "AFTER",
    "DIFFERENCE",
    "CHANCE",
    "SCORES",
    "GALLERY_SIZE",
    "OUTCOME_ORDER",
    "GALLERY_RULE",
    "ModelPair",
    "MapChoice",
    "Comparison",
    "Gallery",
    "GalleryError",
    "model_pair",
    "compared_images",
    "copy_groups",
    "opening_map",
    "best_passing_map",
    "paired_table",
    "compare",
    "compare_models",
    "map_sanity",
    "gallery_images",
    "write_gallery",
    "read_gallery",
    "stale_reason",
]

BEFORE, AFTER = "before", "after"
DIFFERENCE = "after minus before"
CHANCE = "uniform map (chance)"
#: The scores compared: the pointing game's hit and the share of the map's heat inside the outline.
SCORES = ("hit", "energy")
GALLERY_SIZE = 4
#: The gallery takes turns over these (before, after) outcomes of the opening maps.
OUTCOME_ORDER = (("miss", "hit"), ("hit", "hit"), ("miss", "miss"), ("hit", "miss"))
GALLERY_RULE = (
    "chosen by a fixed rule, not by hand: taking turns over four outcomes of the two opening maps (only the after "
    "map hits; both hit; both miss; only the before map hits), the first image by file name of each, among the "
    "compared test images shipped with the app (python -m core.before_after --root draws from another folder)"
)
_VERSION = 1


@dataclass(frozen=True)
class ModelPair:
    """``before`` learned MURA's abnormal label; ``after`` is the fracture-aware model built on it."""

    before: str
    after: str


@dataclass(frozen=True)
class MapChoice:
    """One heat map of one model: a CAM method at a layer, explaining ``target``."""

    method: str
    layer: str
    target: Target

    @property
    def label(self) -> str:
        """How tables and captions name the map: "GradCAM · head conv (1280 ch, stride 32)"."""
        return f"{self.method} · {self.layer}"


@dataclass(frozen=True)
class Comparison:
    """Both models on the same images: per map choice (``opening`` / ``passing``) a table from
    :func:`paired_table`, the maps compared, and how many images and copy groups were resampled.

    ``passing`` is None when neither model has a map known to pass the randomisation check; its
    ``unchecked`` names the side(s) (BEFORE / AFTER) whose output core.trust has not checked.
    """

    pair: ModelPair
    images: tuple[str, ...]
    n_groups: int
    opening_maps: tuple[MapChoice, MapChoice]
    opening: pd.DataFrame
    passing_maps: tuple[MapChoice | None, MapChoice | None]
    passing: pd.DataFrame | None
    unchecked: tuple[str, ...]
    n_boot: int


def _card(model: str, directory: Path | None) -> dict | None:
    try:
        return read_card(ModelArtifacts.of(model, directory).card)
    except ModelCardError:
        return None


def _base_model(card: Mapping) -> str | None:
    """The base model a fracture-aware card names, or None for a card without a fracture output."""
    fracture = (card.get("outputs") or {}).get(FRACTURE) if isinstance(card.get("outputs"), dict) else None
    base = ((fracture or {}).get("recipe") or {}).get("base_model")
    return base if isinstance(base, str) and base else None


def model_pair(model: str, directory: Path | None = None) -> ModelPair | None:
    """The before/after pair ``model`` belongs to (as the base or as the fracture-aware model); else the first
    pair among the shipped models; None when no shipped model with a fracture output names a shipped base."""
    shipped = list_shipped_models(directory)
    pairs = []
    for name in shipped:
        card = _card(name, directory)
        base = card and _base_model(card)
        if base and base in shipped:
            pairs.append(ModelPair(before=base, after=name))
    return next((p for p in pairs if model in (p.before, p.after)), pairs[0] if pairs else None)


def compared_images(
    before_rows: pd.DataFrame, after_rows: pd.DataFrame, test_part: Collection[str] | None
) -> list[str]:
    """The fracture-aware model's cached images that the base model's cache holds too, sorted by file name; with
    ``test_part`` (its split's fixed test part), only those: never an image its fracture output trained on."""
    after = set(after_rows["image"]) if test_part is None else set(after_rows["image"]) & set(test_part)
    return sorted(after & set(before_rows["image"]))


def copy_groups(images: Sequence[str], split: pd.DataFrame | None) -> list[str]:
    """Each image's copy group from the FracAtlas split file; an image it does not list is its own group."""
    known = {} if split is None else dict(zip(split["file"], split["copy_group"].astype(str), strict=True))
    return [known.get(image, image) for image in images]


def _target(rows: pd.DataFrame) -> Target:
    """The output a cache's maps explain (core.eval.localization_sweep.explained_target), which must be one."""
    target = localization_sweep.explained_target(rows)
    if target is None:
        targets = ", ".join(sorted(map(str, rows.loc[rows["target"].astype(str) != "", "target"].unique())))
        raise ValueError(f"the cache explains the maps of {targets or 'no output'}, not of one output")
    return target


def opening_map(rows: pd.DataFrame, architecture: str) -> MapChoice:
    """The map a model opens on for the output its cache explains: GradCAM at that output's default layer."""
    target = _target(rows)
    return MapChoice(DEFAULT_METHOD, get_config(architecture).cam_layer_for(target), target)


def best_passing_map(
    rows: pd.DataFrame, images: Sequence[str], sanity: Mapping[tuple[str, str], str] | None
) -> MapChoice | None:
    """The map with the highest hit rate on ``images`` (then energy, then name) among those whose sanity
    verdict (core.eval.trust.sanity_by_map) is "passes"; None without verdicts or when none passes.
    Chosen on the compared images themselves, so its figure leans optimistic (said on the page)."""
    if not sanity:
        return None
    maps = rows[~rows["method"].isin(localization.BASELINES) & rows["image"].isin(images)]
    means = maps.groupby(["method", "layer", "target"], sort=True)[list(SCORES)].mean()
    passing = means[[sanity.get((method, layer)) == "passes" for method, layer, _ in means.index]]
    if passing.empty:
        return None
    return MapChoice(*passing.sort_values(list(SCORES), ascending=False, kind="stable").index[0])


def _scores(rows: pd.DataFrame, choice: MapChoice | None, images: Sequence[str]) -> np.ndarray:
    """(images, SCORES) of one map, NaN where the cache lacks an image."""
    if choice is None:
        return np.full((len(images), len(SCORES)), np.nan)
    chosen = rows[
        (rows["method"] == choice.method) & (rows["layer"] == choice.layer) & (rows["target"] == choice.target)
    ]
    return chosen.set_index("image").reindex(list(images))[list(SCORES)].to_numpy(dtype=float)


def _uniform(rows: pd.DataFrame, images: Sequence[str]) -> np.ndarray:
    uniform = rows[rows["method"] == localization.UNIFORM]
    return uniform.set_index("image").reindex(list(images))[list(SCORES)].to_numpy(dtype=float)


def paired_table(
    before: np.ndarray,
    after: np.ndarray,
    chance: np.ndarray,
    groups: Sequence[str],
    *,
    n_boot: int = metrics.DEFAULT_N_BOOT,
    seed: int = 0,
) -> pd.DataFrame:
    """Rows BEFORE, AFTER, DIFFERENCE (after minus before, per image) and CHANCE (the uniform map) x columns
    ``<score>``, ``<score>_low``, ``<score>_high`` for each of SCORES: means over images with 95% intervals
    from one set of copy-group resamples (core.eval.metrics.bootstrap_means), so every row is paired.
    A side whose map is missing (all NaN) has no points, and then neither has the difference."""
    blocks = {BEFORE: before, AFTER: after, DIFFERENCE: after - before, CHANCE: chance}
    names = [f"{row}\t{score}" for row in blocks for score in SCORES]
    intervals = metrics.bootstrap_means(
        np.hstack(list(blocks.values())), names=names, n_boot=n_boot, seed=seed, groups=list(groups)
    )
    records = []
    for row in blocks:
        record: dict[str, object] = {"row": row}
        for score in SCORES:
            point, low, high = intervals[f"{row}\t{score}"]
            record |= {score: point, f"{score}_low": low, f"{score}_high": high}
        records.append(record)
    return pd.DataFrame(records).set_index("row")


def compare(
    pair: ModelPair,
    before_rows: pd.DataFrame,
    after_rows: pd.DataFrame,
    *,
    architectures: tuple[str, str],
    sanity: tuple[Mapping[tuple[str, str], str] | None, Mapping[tuple[str, str], str] | None],
    split: pd.DataFrame | None,
    n_boot: int = metrics.DEFAULT_N_BOOT,
    seed: int = 0,
) -> Comparison:
    """Both models' localisation rows compared on the same images (see the module's docstring).

    ``sanity`` is each model's core.eval.trust.sanity_by_map on the output its cache explains, None where
    core.trust has not checked it; ``split`` the fracture-aware model's FracAtlas split (its fixed test part,
    the only images compared, and their copy groups).

    Raises:
        ValueError: the caches share no image, or one explains several outputs.
    """
    test_part = None if split is None else split.loc[split["part"] == fracture_split.TEST, "file"]
    images = compared_images(before_rows, after_rows, test_part)
    if not images:
        raise ValueError(f"{pair.before} and {pair.after} have no outlined test image in common")
    groups = copy_groups(images, split)
    chance = _uniform(after_rows, images)
    opening = (opening_map(before_rows, architectures[0]), opening_map(after_rows, architectures[1]))
    passing = (
        best_passing_map(before_rows, images, sanity[0]),
        best_passing_map(after_rows, images, sanity[1]),
    )

    def table(choices: tuple[MapChoice | None, MapChoice | None]) -> pd.DataFrame:
        before, after = _scores(before_rows, choices[0], images), _scores(after_rows, choices[1], images)
        return paired_table(before, after, chance, groups, n_boot=n_boot, seed=seed)

    return Comparison(
        pair=pair,
        images=tuple(images),
        n_groups=len(set(groups)),
        opening_maps=opening,
        opening=table(opening),
        passing_maps=passing,
        passing=None if passing == (None, None) else table(passing),
        unchecked=tuple(side for side, verdicts in zip((BEFORE, AFTER), sanity, strict=True) if not verdicts),
        n_boot=n_boot,
    )


def map_sanity(files: ModelArtifacts, target: str) -> dict[tuple[str, str], str] | None:
    """core.eval.trust.sanity_by_map of the model's trust cache of ``target``'s output, or None where core.trust
    has not checked that output.

    Raises:
        CachePairError: the trust cache is unreadable.
    """
    cache = trust.read_cache(files, target)
    return None if cache is None else trust.sanity_by_map(cache.summary)


def _rows_and_architecture(model: str, directory: Path | None) -> tuple[pd.DataFrame | None, str]:
    files = ModelArtifacts.of(model, directory)
    card = read_card(files.card)
    cache = localization_sweep.read_cache(files)
    return (None if cache is None else cache.table), str(card.get("architecture"))


def compare_models(
    pair: ModelPair, directory: Path | None = None, *, n_boot: int = metrics.DEFAULT_N_BOOT
) -> Comparison | str:
    """:func:`compare` of the pair's cached rows, trust verdicts and split, or one sentence saying what is
    missing (a cache core.localize has not written, or an unreadable file)."""
    try:
        before_rows, before_arch = _rows_and_architecture(pair.before, directory)
        after_rows, after_arch = _rows_and_architecture(pair.after, directory)
        missing = [name for name, rows in ((pair.before, before_rows), (pair.after, after_rows)) if rows is None]
        if missing:
            return (
                f"No heat-map accuracy cache for {' or '.join(missing)} yet, so the two models cannot be compared: "
                f"run python -m core.localize --root ../shared/fracatlas --model {missing[0]} and reload."
            )
        after_files = ModelArtifacts.of(pair.after, directory)
        split_path = after_files.directory / fracture_split.SPLIT_FILE
        split = fracture_split.read_split(split_path) if split_path.is_file() else None
        sanity = (
            map_sanity(ModelArtifacts.of(pair.before, directory), _target(before_rows)),
            map_sanity(after_files, _target(after_rows)),
        )
        return compare(
            pair,
            before_rows,
            after_rows,
            architectures=(before_arch, after_arch),
            sanity=sanity,
            split=split,
            n_boot=n_boot,
        )
    except (CachePairError, ModelCardError, ModelLoadError, fracture_split.SplitError, ValueError) as exc:
        return f"The before/after comparison cannot be made: {exc}"


# --- the gallery -----------------------------------------------------------------------------------


def gallery_images(outcomes: pd.DataFrame, available: Collection[str], *, size: int = GALLERY_SIZE) -> list[str]:
    """Up to ``size`` images by :data:`GALLERY_RULE`: ``outcomes`` has columns image, before, after
    ("hit"/"miss"); only images in ``available`` are taken."""
    queues = [
        sorted(
            outcomes.loc[(outcomes["before"] == b) & (outcomes["after"] == a), "image"].loc[lambda s: s.isin(available)]
        )
        for b, a in OUTCOME_ORDER
    ]
    chosen: list[str] = []
    while len(chosen) < size and any(queues):
        for queue in queues:
            if queue and len(chosen) < size:
                chosen.append(queue.pop(0))
    return chosen


def _outcomes(comparison: Comparison, rows: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    """image, before, after: each opening map's hit or miss (hit share >= 0.5) on the compared images."""
    frame = pd.DataFrame({"image": list(comparison.images)})
    for side, side_rows, choice in zip((BEFORE, AFTER), rows, comparison.opening_maps, strict=True):
        hits = _scores(side_rows, choice, comparison.images)[:, SCORES.index("hit")]
        frame[side] = np.where(hits >= 0.5, "hit", "miss")
    return frame


class GalleryError(ValueError):
    """The gallery file is unreadable or stale; the message says what to re-run."""


@dataclass(frozen=True)
class Gallery:
    """Both models' opening maps of a few compared images, as the CLI wrote them."""

    pair: ModelPair
    maps: tuple[MapChoice, MapChoice]
    images: tuple[str, ...]
    outcomes: tuple[tuple[str, str], ...]
    heatmaps: tuple[tuple[np.ndarray, np.ndarray], ...]
    rows_sha256: tuple[str, str]
    seconds: float


def _rows_hash(files: ModelArtifacts) -> str:
    cache = localization_sweep.read_cache(files)
    return "" if cache is None else str(cache.summary.get("rows_sha256", ""))


def write_gallery(
    pair: ModelPair, root: Path, *, directory: Path | None = None, size: int = GALLERY_SIZE, progress: bool = True
) -> Path:
    """Compute both models' opening maps of :func:`gallery_images` of ``root`` and write them (uint8) with
    what produced them to the fracture-aware model's folder; prints the seconds each map took.

    Raises:
        ValueError: the comparison cannot be made, or ``root`` holds none of the compared images.
    """
    comparison = compare_models(pair, directory)
    if isinstance(comparison, str):
        raise ValueError(comparison)
    files = (ModelArtifacts.of(pair.before, directory), ModelArtifacts.of(pair.after, directory))
    caches = [localization_sweep.read_cache(f) for f in files]
    rows = tuple(cache.table for cache in caches if cache is not None)
    if len(rows) != len(files):
        raise ValueError("A localisation cache went missing while the gallery was being drawn; re-run.")
    outcomes = _outcomes(comparison, rows)
    available = [image for image in comparison.images if fracatlas.image_file(root, image).is_file()]
    images = gallery_images(outcomes, available, size=size)
    if not images:
        raise ValueError(f"{root} holds none of the {len(comparison.images)} compared test images.")
    models = (load_model(pair.before, directory=directory), load_model(pair.after, directory=directory))
    arrays: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    for index, image in enumerate(images):
        pixels = load_radiograph(fracatlas.image_file(root, image)).pixels
        for side, loaded, choice in zip((BEFORE, AFTER), models, comparison.opening_maps, strict=True):
            tick = time.perf_counter()
            heatmap = explain(loaded, pixels, method=choice.method, layers=[choice.layer], target=choice.target).heatmap
            arrays[f"{side}_{index}"] = np.round(np.clip(heatmap, 0.0, 1.0) * 255).astype(np.uint8)
            if progress:
                print(f"{image} {side} ({choice.label}): {time.perf_counter() - tick:.2f} s")
    by_image = outcomes.set_index("image")
    meta = {
        "version": _VERSION,
        "before": pair.before,
        "after": pair.after,
        "maps": [vars(choice) for choice in comparison.opening_maps],
        "images": images,
        "outcomes": [[by_image.loc[i, BEFORE], by_image.loc[i, AFTER]] for i in images],
        "rows_sha256": [_rows_hash(f) for f in files],
        "seconds": round(time.perf_counter() - started, 1),
    }
    buffer = io.BytesIO()
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    atomic.write_bytes(files[1].before_after_gallery, buffer.getvalue())
    return files[1].before_after_gallery


def read_gallery(files: ModelArtifacts) -> Gallery | None:
    """The gallery in the fracture-aware model's folder, or None before the CLI has written one.

    Raises:
        GalleryError: the file cannot be read.
    """
    path = files.before_after_gallery
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            count = len(meta["images"])
            heatmaps = tuple((data[f"{BEFORE}_{i}"], data[f"{AFTER}_{i}"]) for i in range(count))
        return Gallery(
            pair=ModelPair(meta["before"], meta["after"]),
            maps=(MapChoice(**meta["maps"][0]), MapChoice(**meta["maps"][1])),
            images=tuple(meta["images"]),
            outcomes=tuple(tuple(o) for o in meta["outcomes"]),
            heatmaps=heatmaps,
            rows_sha256=tuple(meta["rows_sha256"]),
            seconds=float(meta["seconds"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GalleryError(
            f"{path.name} cannot be read ({type(exc).__name__}); re-run python -m core.before_after."
        ) from exc


def stale_reason(gallery: Gallery, comparison: Comparison, directory: Path | None = None) -> str | None:
    """Why the gallery no longer shows the compared maps (another pair, other maps, re-run caches), or None."""
    files = (ModelArtifacts.of(comparison.pair.before, directory), ModelArtifacts.of(comparison.pair.after, directory))
    if (
        gallery.pair != comparison.pair
        or gallery.maps != comparison.opening_maps
        or gallery.rows_sha256 != tuple(_rows_hash(f) for f in files)
    ):
        return (
            "The gallery was drawn from other caches than the figures above; re-run python -m core.before_after "
            "to redraw it."
        )
    return None
