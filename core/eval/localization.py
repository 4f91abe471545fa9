"""Does a heat map point at the lesion? Scores of one map against expert outlines, and summaries.

A map here is a float (H, W) array at the radiograph's own pixels (``core.cam.explain`` maps CAMs back
through the letterbox crop before normalising), scored against the boolean union of the image's
expert outlines (``core.data.fracatlas.Outlines.mask``). Every score first min-max normalises the map
over the image; a flat map (no maximum, nothing to point at) is scored as the uniform map.

- **hit** (pointing game, Zhang et al. 2016): the map's maximum lies within ``TOLERANCE_PX`` pixels
  (Euclidean, in the stored image's pixels: longest side 512 for FracAtlas) of an outline. Where
  several pixels share the maximum, hit is the share of them that do, so a uniform map scores its
  chance level: the share of the image within the tolerance of an outline.
- **energy inside**: the share of the map's (non-negative) mass that lies inside the outlines.
- **IoU and Dice** of the map thresholded at Otsu's threshold (OpenCV's, on the map quantised to
  256 levels), and IoU over the fixed grid ``THRESHOLD_GRID`` (pixels with heat >= t).

Two chance levels are scored the same way on every image: ``UNIFORM`` (a constant map: what
pointing anywhere gives) and ``BRIGHT_BONE`` (the radiograph's own intensity: a map that only
finds dense bone or metal). A CAM that does not beat the bright-bone map says nothing about the
fracture that the picture itself does not.

Example:
    >>> scores = score_map(heatmap, outlines.mask(file))  # doctest: +SKIP
    >>> scores.hit, scores.energy, scores.iou
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

from core.eval import metrics

__all__ = [
    "TOLERANCE_PX",
    "THRESHOLD_GRID",
    "UNIFORM",
    "BRIGHT_BONE",
    "BASELINES",
    "SCORE_COLUMNS",
    "LocalizationScores",
    "tolerance_region",
    "normalised",
    "pointing_hit",
    "energy_inside",
    "otsu_threshold",
    "overlap",
    "score_map",
    "baseline_maps",
    "grid_column",
    "summarise",
    "coinciding_maps",
]

TOLERANCE_PX = 15
THRESHOLD_GRID: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
UNIFORM = "uniform"
BRIGHT_BONE = "bright bone"
BASELINES = (UNIFORM, BRIGHT_BONE)
#: Per-image figures that summaries average (the grid's IoU columns come after them).
SCORE_COLUMNS = ("hit", "energy", "iou", "dice")


def grid_column(threshold: float) -> str:
    """The rows' column holding IoU at one grid threshold, e.g. ``iou_at_0.3``."""
    return f"iou_at_{threshold:g}"


@dataclass(frozen=True)
class LocalizationScores:
    """One map against one image's outlines; ``iou_grid[i]`` is IoU at ``THRESHOLD_GRID[i]``."""

    hit: float
    energy: float
    iou: float
    dice: float
    otsu_threshold: float
    iou_grid: tuple[float, ...]

    def as_row(self) -> dict[str, float]:
        """Flat columns for a CSV row: hit, energy, iou, dice, otsu_threshold, iou_at_<t>..."""
        row = {k: v for k, v in asdict(self).items() if k != "iou_grid"}
        row.update({grid_column(t): v for t, v in zip(THRESHOLD_GRID, self.iou_grid, strict=True)})
        return row


def tolerance_region(mask: np.ndarray, tolerance: float = TOLERANCE_PX) -> np.ndarray:
    """Pixels within ``tolerance`` pixels (Euclidean) of the outlines, the outlines included."""
    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    return ndimage.distance_transform_edt(~mask) <= tolerance


def normalised(heatmap: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1] over the image; a flat map becomes all ones (the uniform map)."""
    values = np.asarray(heatmap, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.ones_like(values)
    return (values - low) / (high - low)


def pointing_hit(heatmap: np.ndarray, region: np.ndarray) -> float:
    """Share of the map's maximal pixels inside ``region``: 1 or 0 for a single maximum."""
    maxima = heatmap == heatmap.max()
    return float(region[maxima].mean())


def energy_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the positive mass of ``heatmap`` inside ``mask`` (the mask's share if it has none)."""
    positive = np.clip(heatmap, 0.0, None)
    total = float(positive.sum())
    if total <= 0.0:
        return float(mask.mean())
    return float(positive[mask].sum() / total)


def otsu_threshold(heatmap: np.ndarray) -> float:
    """Otsu's threshold of a [0, 1] map, in [0, 1]; pixels above it form the map's region."""
    levels = np.round(np.clip(heatmap, 0.0, 1.0) * 255).astype(np.uint8)
    threshold, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(threshold) / 255.0


def overlap(predicted: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """IoU and Dice of two boolean masks (both 0 when both are empty)."""
    intersection = float(np.logical_and(predicted, mask).sum())
    union = float(np.logical_or(predicted, mask).sum())
    total = float(predicted.sum() + mask.sum())
    if union == 0.0:
        return 0.0, 0.0
    return intersection / union, 2.0 * intersection / total


def score_map(
    heatmap: np.ndarray, mask: np.ndarray, *, tolerance: float = TOLERANCE_PX, region: np.ndarray | None = None
) -> LocalizationScores:
    """Hit, energy inside, IoU/Dice at Otsu and IoU over the grid of one map against ``mask``.

    ``region`` is ``tolerance_region(mask, tolerance)`` when the caller scores several maps
    against one mask (it is the costly part).

    Raises:
        ValueError: the map and mask differ in shape, or the mask outlines nothing.
    """
    if heatmap.shape != mask.shape:
        raise ValueError(f"The heat map {heatmap.shape} and the outline mask {mask.shape} differ in size.")
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("The image has no outlined region to score the heat map against.")
    heat = normalised(heatmap)
    flat = bool((heat == 1.0).all())
    levels = np.round(heat * 255).astype(np.uint8)
    threshold = 0.0 if flat else otsu_threshold(heat)
    # cv2's Otsu splits at "> threshold" on the quantised levels; a flat map keeps every pixel.
    otsu_region = np.ones_like(mask) if flat else levels > round(threshold * 255)
    iou, dice = overlap(otsu_region, mask)
    grid = tuple(overlap(heat >= t, mask)[0] for t in THRESHOLD_GRID)
    return LocalizationScores(
        hit=pointing_hit(heat, tolerance_region(mask, tolerance) if region is None else region),
        energy=energy_inside(heat, mask),
        iou=iou,
        dice=dice,
        otsu_threshold=threshold,
        iou_grid=grid,
    )


def baseline_maps(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """The chance-level maps of one radiograph: a constant map, and its own intensity."""
    return {
        UNIFORM: np.ones(pixels.shape, dtype=np.float32),
        BRIGHT_BONE: pixels.astype(np.float32) / 255.0,
    }


def _score_columns() -> list[str]:
    return [*SCORE_COLUMNS, *(grid_column(t) for t in THRESHOLD_GRID)]


def _interval_json(interval: metrics.BootstrapInterval) -> dict[str, float | None]:
    return {
        key: (None if value is None else round(value, 6))
        for key, value in (("point", interval.point), ("low", interval.low), ("high", interval.high))
    }


def summarise(
    rows: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, group_by: Sequence[str] = ("method", "layer")
) -> dict[str, object]:
    """Mean hit, energy, IoU and Dice (95% bootstrap CIs over images) per method and layer.

    ``rows`` has one row per image x method x layer (baselines have method UNIFORM or
    BRIGHT_BONE and an empty layer). Every group is resampled with the same draws of images, so
    groups scored on the same images are compared on the same resamples; ``vs_bright_bone`` is
    the paired difference (map minus bright-bone map on the same images) with its interval, and
    ``beats_bright_bone`` says whether that interval lies above 0; ``vs_uniform`` / ``beats_uniform``
    the same against the uniform map, the chance level a map must beat to point better than chance.
    """
    columns = _score_columns()
    rows = rows.assign(layer=rows["layer"].fillna("").astype(str))
    images = sorted(rows["image"].unique())
    baselines = {
        name: rows[rows["method"] == method].set_index("image")[columns]
        for name, method in (("bright_bone", BRIGHT_BONE), ("uniform", UNIFORM))
    }
    groups: list[dict[str, object]] = []
    for key, group in rows.groupby(list(group_by), sort=True):
        group = group.set_index("image").reindex(images).dropna(subset=list(SCORE_COLUMNS))
        values = group[columns].to_numpy(dtype=float)
        statistics = metrics.bootstrap_means(values, n_boot=n_boot, seed=seed, names=columns)
        entry: dict[str, object] = dict(zip(group_by, key if isinstance(key, tuple) else (key,), strict=True))
        entry["n_images"] = int(len(group))
        entry.update({name: _interval_json(statistics[name]) for name in SCORE_COLUMNS})
        entry["iou_grid"] = {f"{t:g}": round(float(statistics[grid_column(t)].point or 0.0), 6) for t in THRESHOLD_GRID}
        for name, baseline in baselines.items():
            if entry["method"] in BASELINES or baseline.empty:
                continue
            paired = baseline.reindex(group.index)[list(SCORE_COLUMNS)].to_numpy(dtype=float)
            differences = metrics.bootstrap_means(
                values[:, : len(SCORE_COLUMNS)] - paired, n_boot=n_boot, seed=seed, names=list(SCORE_COLUMNS)
            )
            entry[f"vs_{name}"] = {score: _interval_json(differences[score]) for score in SCORE_COLUMNS}
            entry[f"beats_{name}"] = {score: bool((differences[score].low or 0.0) > 0.0) for score in SCORE_COLUMNS}
        groups.append(entry)
    return {
        "n_images": len(images),
        "tolerance_px": TOLERANCE_PX,
        "threshold_grid": list(THRESHOLD_GRID),
        "n_boot": n_boot,
        "seed": seed,
        "confidence": metrics.CONFIDENCE,
        "groups": groups,
    }


def coinciding_maps(rows: pd.DataFrame, *, atol: float = 1e-6) -> list[tuple[str, tuple[str, ...]]]:
    """(layer, methods) for every set of two or more methods whose scores agree on every image at that layer.

    They are one map, not several: at a layer followed only by global average pooling and a linear layer
    (a network's last convolution), the logit's gradient is the same at every position of a channel, so
    GradCAM (mean gradient as weight), HiResCAM (gradient times activation) and XGradCAM (activation-
    normalised weights) all give sum_c w_c A_c, the original CAM; LayerCAM (positive gradient times
    activation) and GradCAMElementWise (ReLU of gradient times activation, summed) likewise coincide.
    A ranking should count such a set once.
    """
    maps = rows[~rows["method"].isin(BASELINES)].assign(layer=lambda r: r["layer"].fillna("").astype(str))
    found = []
    for layer, at_layer in maps.groupby("layer", sort=True):
        wide = at_layer.pivot_table(index="image", columns="method", values=list(SCORE_COLUMNS))
        methods = sorted(at_layer["method"].unique())
        left = set(methods)
        for method in methods:
            if method not in left:
                continue
            same = [
                other
                for other in methods
                if other in left
                and np.allclose(
                    wide.xs(method, axis=1, level="method").to_numpy(),
                    wide.xs(other, axis=1, level="method").to_numpy(),
                    atol=atol,
                    equal_nan=True,
                )
            ]
            left -= set(same)
            if len(same) > 1:
                found.append((str(layer), tuple(same)))
    return found
