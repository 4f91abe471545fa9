"""Heat-map accuracy against FracAtlas's expert outlines: the cached sweep as tables and charts,
outlines drawn over a CAM, and one view's scores computed live.

The ranking, chance levels and per-image scores come from the cache that ``python -m
core.localize`` wrote (:func:`core.eval.localization_sweep.read_cache`); nothing here recomputes them. Images
are read from a FracAtlas folder: ``data_samples/fracatlas`` when the project ships samples, or
a folder the user names (``FRACATLAS_ROOT`` by default).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data import fracatlas
from core.data.imaging import RadiographDecodeError, load_radiograph
from core.eval import localization
from core.eval.localization import BRIGHT_BONE, UNIFORM
from core.eval.localization_sweep import DATASET, read_cache
from core.store.artifacts import CachedPair, ModelArtifacts, file_version
from dashboard.charts import format_interval

__all__ = [
    "FRACATLAS_PREFIX",
    "SAMPLES_ROOT",
    "METRICS",
    "cached_sweep",
    "ranking",
    "ranking_figure",
    "grid_figure",
    "verdict",
    "interval_text",
    "with_outcomes",
    "confidence_table",
    "fracatlas_root",
    "read_outlines",
    "expert_outline",
    "draw_outline",
    "image_pixels",
    "outline_scores",
    "outlined_view",
]

#: How the dashboard names a FracAtlas image: this prefix + its file relative to the root.
FRACATLAS_PREFIX = "fracatlas/"
SAMPLES_ROOT = Path(__file__).resolve().parent.parent / "data_samples" / "fracatlas"
#: Summary key -> what the page calls it.
METRICS = {"hit": "Hit rate (pointing game)", "energy": "Energy inside", "iou": "mIoU at Otsu",
           "dice": "mDice at Otsu"}
_OUTLINE_COLOUR = (0, 255, 255)  # cyan: visible on the jet colour map's red and blue ends


@st.cache_data(show_spinner=False)
def _read_cache(directory: str, rows_version: int, summary_version: int) -> CachedPair | None:
    return read_cache(ModelArtifacts(Path(directory)))


def cached_sweep(model: str) -> CachedPair | None:
    """The model's cached sweep, re-read when either file changes; None before the first sweep.

    Raises:
        CachePairError: the files are unreadable or do not belong together.
    """
    files = ModelArtifacts.of(model)
    return _read_cache(str(files.directory), file_version(files.localization(DATASET)),
                       file_version(files.localization_summary(DATASET)))


def _label(method: str, layer: str) -> str:
    return f"{method} · {layer}" if layer else method


def ranking(summary: dict, metric: str) -> pd.DataFrame:
    """One row per method x layer, best ``metric`` first, then the two chance levels.

    Columns: map, method, layer, n_images, the metric's point/low/high, its paired difference
    from the bright-bone map (diff, diff_low, diff_high) and beats_bright_bone.
    """
    records = []
    for group in summary["groups"]:
        interval = group[metric]
        difference = group.get("vs_bright_bone", {}).get(metric, {})
        records.append({
            "map": _label(group["method"], group["layer"]), "method": group["method"], "layer": group["layer"],
            "n_images": group["n_images"], "point": interval["point"], "low": interval["low"],
            "high": interval["high"], "diff": difference.get("point"), "diff_low": difference.get("low"),
            "diff_high": difference.get("high"),
            "beats_bright_bone": group.get("beats_bright_bone", {}).get(metric),
            "chance": group["method"] in localization.BASELINES,
        })
    table = pd.DataFrame(records)
    return table.sort_values(["chance", "point"], ascending=[True, False], kind="stable").reset_index(drop=True)


def ranking_figure(table: pd.DataFrame, metric: str, *, top: int = 15) -> go.Figure:
    """The best ``top`` maps as points with 95% CIs, the chance levels as vertical lines."""
    maps = table[~table["chance"]].head(top).iloc[::-1]
    figure = go.Figure(go.Scatter(
        x=maps["point"], y=maps["map"], mode="markers", name="CAM",
        error_x={"type": "data", "symmetric": False, "array": maps["high"] - maps["point"],
                 "arrayminus": maps["point"] - maps["low"]},
        hovertemplate="%{y}: %{x:.3f}<extra></extra>",
    ))
    for name, dash in ((UNIFORM, "dot"), (BRIGHT_BONE, "dash")):
        chance = table[table["method"] == name]
        if not chance.empty:
            figure.add_vline(x=float(chance["point"].iloc[0]), line_dash=dash,
                             annotation_text=f"{name} map", annotation_position="top")
    figure.update_layout(xaxis_title=METRICS[metric], yaxis_title=None, height=max(320, 28 * len(maps) + 120),
                         margin={"l": 10, "r": 10, "t": 40, "b": 40}, showlegend=False)
    return figure


def grid_figure(summary: dict, maps: list[str]) -> go.Figure:
    """mIoU against the heat threshold for the chosen maps and both chance levels."""
    figure = go.Figure()
    for group in summary["groups"]:
        label = _label(group["method"], group["layer"])
        if label in maps or group["method"] in localization.BASELINES:
            thresholds = [float(t) for t in group["iou_grid"]]
            dash = "dash" if group["method"] in localization.BASELINES else "solid"
            figure.add_trace(go.Scatter(x=thresholds, y=list(group["iou_grid"].values()), name=label,
                                        mode="lines+markers", line={"dash": dash}))
    figure.update_layout(xaxis_title="heat threshold (share of the map's range)", yaxis_title="mIoU",
                         height=360, margin={"l": 10, "r": 10, "t": 30, "b": 40})
    return figure


def interval_text(point: float | None, low: float | None, high: float | None) -> str:
    """'0.412 (0.361–0.467)', the point alone without an interval, '—' without a point (None or NaN)."""
    def defined(value: float | None) -> float | None:
        return None if value is None or pd.isna(value) else float(value)

    return format_interval({"point": defined(point), "low": defined(low), "high": defined(high)})


def verdict(table: pd.DataFrame, metric: str) -> tuple[bool, str]:
    """Whether the best map beats the bright-bone map on ``metric`` (paired 95% CI above 0), in words."""
    maps = table[~table["chance"]]
    bright = table[table["method"] == BRIGHT_BONE]
    if maps.empty or bright.empty:
        return False, "The cache holds no CAM and bright-bone pair to compare."
    best = maps.iloc[0]
    name, figure = METRICS[metric][0].lower() + METRICS[metric][1:], float(bright["point"].iloc[0])
    difference = (f"{best['diff']:+.3f} (95% CI {best['diff_low']:+.3f} to {best['diff_high']:+.3f})"
                  if best["diff"] is not None and pd.notna(best["diff_low"]) else "an undefined difference")
    if bool(best["beats_bright_bone"]):
        return True, (f"The best map, {best['map']}, beats the bright-bone baseline on {name}: "
                      f"{best['point']:.3f} against {figure:.3f}, a paired difference of {difference}.")
    return False, (f"The best map, {best['map']}, does not beat the bright-bone baseline on {name}: "
                   f"{best['point']:.3f} against {figure:.3f} for the image's own brightness, a paired "
                   f"difference of {difference}. On this measure the heat maps find the fracture no better "
                   "than a map of dense bone would.")


def with_outcomes(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with ``outcome`` (hit/miss) and ``model`` (right/wrong: P(abnormal) >= the card's threshold)."""
    return rows.assign(outcome=np.where(rows["hit"] >= 0.5, "hit", "miss"),
                       model=np.where(rows["probability"] >= rows["threshold"], "right", "wrong"))


def confidence_table(rows: pd.DataFrame, *, bins: int = 4) -> pd.DataFrame:
    """Localisation by model confidence: hit rate, energy and IoU per quantile bin of P(abnormal)."""
    binned = rows.assign(confidence=pd.qcut(rows["probability"], q=bins, duplicates="drop"))
    table = binned.groupby("confidence", observed=True).agg(
        images=("image", "size"), hit_rate=("hit", "mean"), energy=("energy", "mean"), iou=("iou", "mean"))
    table.index = [f"{interval.left:.2f}–{interval.right:.2f}" for interval in table.index]
    table.index.name = "P(abnormal)"
    return table.reset_index()


def fracatlas_root(text: str | None = None) -> tuple[Path | None, str | None]:
    """The FracAtlas folder to draw images from: ``text`` if given, else FRACATLAS_ROOT, else the
    shipped samples; (root, None), or (None, one-sentence reason), or (None, None) when none is set."""
    candidate = (text or "").strip() or os.environ.get("FRACATLAS_ROOT", "").strip()
    if not candidate:
        if (SAMPLES_ROOT / fracatlas.LABELS_FILE).is_file():
            return SAMPLES_ROOT.resolve(), None
        return None, None
    try:
        return fracatlas.resolve_root(candidate), None
    except fracatlas.FracAtlasError as exc:
        return None, str(exc)


@st.cache_data(show_spinner=False)
def _read_outlines(root: str, version: int) -> fracatlas.Outlines:
    return fracatlas.read_outlines(Path(root))


def read_outlines(root: Path) -> fracatlas.Outlines:
    """The root's outlines, cached per COCO file version."""
    return _read_outlines(str(root), file_version(root / fracatlas.COCO_FILE))


def expert_outline(ref: str, root: Path | None = None) -> np.ndarray | None:
    """The union mask of a FracAtlas view's outlines (ref ``fracatlas/<file>``), or None when the
    view is not a FracAtlas image, has no outline, or the samples are absent."""
    if not ref.startswith(FRACATLAS_PREFIX):
        return None
    root = root or (SAMPLES_ROOT if (SAMPLES_ROOT / fracatlas.COCO_FILE).is_file() else None)
    if root is None:
        return None
    try:
        outlines = read_outlines(root)
    except fracatlas.FracAtlasError:
        return None
    file = ref.removeprefix(FRACATLAS_PREFIX)
    if file not in outlines.files():
        return None
    return outlines.mask(file)


@st.cache_data(show_spinner=False, max_entries=64)
def _pixels(path: str, version: int) -> np.ndarray:
    return load_radiograph(Path(path)).pixels


def image_pixels(root: Path, file: str) -> np.ndarray | None:
    """A FracAtlas image's greyscale pixels (cached per file version), or None if it cannot be read."""
    path = fracatlas.image_file(root, file)
    try:
        return _pixels(str(path), file_version(path))
    except (RadiographDecodeError, OSError):
        return None


def draw_outline(picture: np.ndarray, mask: np.ndarray, *, thickness: int = 2) -> np.ndarray:
    """An RGB picture with the outline of ``mask`` drawn over it (a copy)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    drawn = np.ascontiguousarray(picture.copy())
    cv2.drawContours(drawn, contours, -1, _OUTLINE_COLOUR, thickness)
    return drawn


def outline_scores(heatmap: np.ndarray, pixels: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """This view's hit, energy inside, IoU and Dice at Otsu, beside the two chance maps'."""
    maps = {"this heat map": heatmap, **{f"{name} map": m for name, m in localization.baseline_maps(pixels).items()}}
    region = localization.tolerance_region(mask)
    records = []
    for name, heat in maps.items():
        scores = localization.score_map(heat, mask, region=region)
        records.append({"map": name, "hit": scores.hit, "energy inside": scores.energy,
                        "IoU at Otsu": scores.iou, "Dice at Otsu": scores.dice})
    return pd.DataFrame(records)



def outlined_view(ref: str, pixels: np.ndarray, heatmap: np.ndarray,
                  picture: np.ndarray) -> tuple[np.ndarray, pd.DataFrame | None]:
    """For a FracAtlas view with an outline: the picture with the outline drawn and this view's
    scores (:func:`outline_scores`); any other view: the picture unchanged and None."""
    mask = expert_outline(ref)
    if mask is None or mask.shape != pixels.shape:
        return picture, None
    return draw_outline(picture, mask), outline_scores(heatmap, pixels, mask)
