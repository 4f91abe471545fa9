"""Heat-map accuracy against FracAtlas's expert outlines: the cached sweep as tables and charts,
outlines drawn over a CAM, and one view's scores computed live.

The ranking, chance levels and per-image scores come from the cache that ``python -m
core.localize`` wrote (:func:`core.eval.localization_sweep.read_cache`); nothing here recomputes them. Images
are read from a FracAtlas folder: ``data_samples/fracatlas`` when the project ships samples, or
a folder the user names (``FRACATLAS_ROOT`` by default).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.cam.explain import Target
from core.data import fracatlas
from core.data.imaging import RadiographDecodeError, load_radiograph
from core.eval import localization, localization_sweep
from core.eval.localization import BRIGHT_BONE, UNIFORM
from core.eval.localization_sweep import DATASET, read_cache
from core.model.card import FRACATLAS_LABEL, out_of_scope_reason
from core.store.artifacts import CachedPair, ModelArtifacts, file_version
from dashboard.charts import format_interval

__all__ = [
    "FRACATLAS_PREFIX",
    "SAMPLES_ROOT",
    "METRICS",
    "cached_sweep",
    "coinciding",
    "COINCIDING_WHY",
    "NOT_CHECKED",
    "ranking",
    "ranking_figure",
    "grid_figure",
    "verdict",
    "interval_text",
    "with_outcomes",
    "confidence_table",
    "FOLDER_KEY",
    "fracatlas_root",
    "folder_input",
    "image_root",
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
METRICS = {"hit": "Hit rate (pointing game)", "energy": "Energy inside", "iou": "mIoU at Otsu", "dice": "mDice at Otsu"}
_OUTLINE_COLOUR = (0, 255, 255)  # cyan: visible on the jet colour map's red and blue ends


@st.cache_data(show_spinner=False)
def _read_cache(directory: str, rows_version: int, summary_version: int) -> CachedPair | None:
    return read_cache(ModelArtifacts(Path(directory)))


@st.cache_data(show_spinner=False, max_entries=4)
def _coinciding(directory: str, rows_version: int, summary_version: int) -> list[tuple[str, tuple[str, ...]]]:
    cached = _read_cache(directory, rows_version, summary_version)
    return [] if cached is None else localization.coinciding_maps(cached.table)


def coinciding(model: str) -> list[tuple[str, tuple[str, ...]]]:
    """core.eval.localization.coinciding_maps of the model's cached sweep (once per cache version)."""
    files = ModelArtifacts.of(model)
    return _coinciding(
        str(files.directory),
        file_version(files.localization(DATASET)),
        file_version(files.localization_summary(DATASET)),
    )


#: Why coinciding methods give one map (core.eval.localization.coinciding_maps), in words for the page.
COINCIDING_WHY = (
    "At a layer followed only by global average pooling and a linear layer (the head conv here), the "
    "logit's gradient is the same at every position of a channel (its weight over the number of positions). "
    "GradCAM's channel weights (the mean gradient), HiResCAM's gradient × activation and XGradCAM's "
    "normalised weights then all reduce to Σ w·A, the original CAM; LayerCAM (positive gradient × activation) "
    "and GradCAMElementWise (the ReLU of gradient × activation, summed) reduce to one map for the same reason. "
    "Each such set is one map, counted once, not several passes."
)


def cached_sweep(model: str) -> CachedPair | None:
    """The model's cached sweep, re-read when either file changes; None before the first sweep.

    Raises:
        CachePairError: the files are unreadable or do not belong together.
    """
    files = ModelArtifacts.of(model)
    return _read_cache(
        str(files.directory),
        file_version(files.localization(DATASET)),
        file_version(files.localization_summary(DATASET)),
    )


#: Plain words for the output a map explains.
OUTPUT_WORDS = {"abnormal": "P(abnormal)", "fracture": "P(fracture)"}


def explained_target(rows: pd.DataFrame) -> Target:
    """The output the sweep's maps explain (core.eval.localization_sweep.explained_target; core.localize
    explains the fracture output where a model has one): the gallery must draw maps of that output, and its
    sanity checks are that output's. "abnormal" for a cache without maps or with maps of several outputs."""
    return localization_sweep.explained_target(rows) or "abnormal"


def _label(method: str, layer: str) -> str:
    return f"{method} · {layer}" if layer else method


#: What the sanity column says of a map the trust sweep did not check (core.trust covers fewer layers).
NOT_CHECKED = "not checked"


def ranking(
    summary: dict,
    metric: str,
    *,
    sanity: Mapping[tuple[str, str], str] | None = None,
    same: Sequence[tuple[str, Sequence[str]]] = (),
) -> pd.DataFrame:
    """One row per distinct map (method x layer), best ``metric`` first, then the two chance levels.

    Columns: map, method, layer, n_images, the metric's point/low/high, its paired difference from the
    uniform map (diff, diff_low, diff_high; the chance level a map must beat) and beats_uniform, the same
    against the bright-bone map (bright_diff..., beats_bright_bone), and ``sanity`` (core.eval.trust.sanity_by_map:
    passes / fails / unclear / NOT_CHECKED). Methods in one set of ``same``
    (core.eval.localization.coinciding_maps) are one map: a single row named "A = B = C · layer".
    """
    merged = {(layer, method): methods for layer, methods in same for method in methods}
    records = []
    for group in summary["groups"]:
        methods = merged.get((group["layer"], group["method"]))
        if methods and group["method"] != methods[0]:
            continue  # counted once, under the set's first method
        interval = group[metric]
        uniform = group.get("vs_uniform", {}).get(metric, {})
        bright = group.get("vs_bright_bone", {}).get(metric, {})
        name = " = ".join(methods) if methods else group["method"]
        records.append(
            {
                "map": _label(name, group["layer"]),
                "method": group["method"],
                "layer": group["layer"],
                "n_images": group["n_images"],
                "point": interval["point"],
                "low": interval["low"],
                "high": interval["high"],
                "diff": uniform.get("point"),
                "diff_low": uniform.get("low"),
                "diff_high": uniform.get("high"),
                "beats_uniform": group.get("beats_uniform", {}).get(metric),
                "bright_diff": bright.get("point"),
                "bright_diff_low": bright.get("low"),
                "bright_diff_high": bright.get("high"),
                "beats_bright_bone": group.get("beats_bright_bone", {}).get(metric),
                "chance": group["method"] in localization.BASELINES,
                "sanity": ""
                if group["method"] in localization.BASELINES
                else (sanity or {}).get((group["method"], group["layer"]), NOT_CHECKED),
            }
        )
    table = pd.DataFrame(records)
    return table.sort_values(["chance", "point"], ascending=[True, False], kind="stable").reset_index(drop=True)


def ranking_figure(table: pd.DataFrame, metric: str, *, top: int = 15) -> go.Figure:
    """The best ``top`` maps as points with 95% CIs, the chance levels as vertical lines."""
    maps = table[~table["chance"]].head(top).iloc[::-1]
    figure = go.Figure(
        go.Scatter(
            x=maps["point"],
            y=maps["map"],
            mode="markers",
            name="CAM",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": maps["high"] - maps["point"],
                "arrayminus": maps["point"] - maps["low"],
            },
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    for name, dash in ((UNIFORM, "dot"), (BRIGHT_BONE, "dash")):
        chance = table[table["method"] == name]
        if not chance.empty:
            figure.add_vline(
                x=float(chance["point"].iloc[0]),
                line_dash=dash,
                annotation_text=f"{name} map",
                annotation_position="top",
            )
    figure.update_layout(
        xaxis_title=METRICS[metric],
        yaxis_title=None,
        height=max(320, 28 * len(maps) + 120),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
        showlegend=False,
    )
    return figure


def grid_figure(summary: dict, maps: list[str]) -> go.Figure:
    """mIoU against the heat threshold for the chosen maps and both chance levels."""
    figure = go.Figure()
    for group in summary["groups"]:
        label = _label(group["method"], group["layer"])
        if label in maps or group["method"] in localization.BASELINES:
            thresholds = [float(t) for t in group["iou_grid"]]
            dash = "dash" if group["method"] in localization.BASELINES else "solid"
            figure.add_trace(
                go.Scatter(
                    x=thresholds,
                    y=list(group["iou_grid"].values()),
                    name=label,
                    mode="lines+markers",
                    line={"dash": dash},
                )
            )
    figure.update_layout(
        xaxis_title="heat threshold (share of the map's range)",
        yaxis_title="mIoU",
        height=360,
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
    )
    return figure


def interval_text(point: float | None, low: float | None, high: float | None) -> str:
    """'0.412 (0.361–0.467)', the point alone without an interval, '—' without a point (None or NaN)."""

    def defined(value: float | None) -> float | None:
        return None if value is None or pd.isna(value) else float(value)

    return format_interval({"point": defined(point), "low": defined(low), "high": defined(high)})


def verdict(table: pd.DataFrame, metric: str) -> tuple[bool, str]:
    """The map to recommend: the best on ``metric`` among those that pass the sanity checks, and whether
    it beats the uniform map (pointing anywhere: chance) by a paired 95% CI above 0, in words.

    A map that fails the checks is not reading the model, however well it scores here, so it is never
    recommended; the best map overall is named too when it is not the recommended one.
    """
    maps = table[~table["chance"]]
    uniform = table[table["method"] == UNIFORM]
    if maps.empty or uniform.empty:
        return False, "The cache holds no CAM and uniform-map pair to compare."
    name, chance = METRICS[metric][0].lower() + METRICS[metric][1:], float(uniform["point"].iloc[0])
    passing = maps[maps["sanity"] == "passes"]
    top = maps.iloc[0]
    if passing.empty:
        return False, (
            f"No map passes the sanity checks above, so none is recommended. The highest {name}, "
            f"{top['map']} ({top['point']:.3f}), is {top['sanity']} on them."
        )
    best = passing.iloc[0]
    difference = (
        f"{best['diff']:+.3f} (95% CI {best['diff_low']:+.3f} to {best['diff_high']:+.3f})"
        if best["diff"] is not None and pd.notna(best["diff_low"])
        else "an undefined difference"
    )
    beats = bool(best["beats_uniform"])
    sentence = (
        f"Recommended: {best['map']}, the best {name} among the maps that pass the sanity checks "
        f"({best['point']:.3f}); it {'beats' if beats else 'does not beat'} chance (the uniform map, "
        f"{chance:.3f}) by a paired difference of {difference}."
    )
    if top["map"] != best["map"]:
        sentence += (
            f" The highest {name}, {top['map']} ({top['point']:.3f}), is not recommended: it "
            f"{'fails' if top['sanity'] == 'fails' else 'is ' + top['sanity'] + ' on'} the sanity checks."
        )
    return beats, sentence


#: ``model`` of a row the model is not scored on (core.model.card.out_of_scope_reason).
NOT_SCORED = "not scored"


def with_outcomes(rows: pd.DataFrame, card: Mapping | None = None) -> pd.DataFrame:
    """Rows with ``outcome`` (hit/miss) and ``model``: right/wrong (P >= the card's threshold against the
    fracture label) where core.model.card.out_of_scope_reason scores the model on FracAtlas's fracture label,
    else NOT_SCORED (a model without a fracture output is never right or wrong about a fracture)."""
    scored = rows["region"].map(lambda region: out_of_scope_reason(card or {}, str(region), FRACATLAS_LABEL) is None)
    call = np.where(rows["probability"] >= rows["threshold"], "right", "wrong")  # every row is a fracture
    return rows.assign(
        outcome=np.where(rows["hit"] >= 0.5, "hit", "miss"), model=np.where(scored.astype(bool), call, NOT_SCORED)
    )


def confidence_table(rows: pd.DataFrame, *, bins: int = 4) -> pd.DataFrame:
    """Localisation by model confidence: hit rate, energy and IoU per quantile bin of the probability of the
    output the maps explain."""
    binned = rows.assign(confidence=pd.qcut(rows["probability"], q=bins, duplicates="drop"))
    table = binned.groupby("confidence", observed=True).agg(
        images=("image", "size"), hit_rate=("hit", "mean"), energy=("energy", "mean"), iou=("iou", "mean")
    )
    table.index = [f"{interval.left:.2f}–{interval.right:.2f}" for interval in table.index]
    table.index.name = OUTPUT_WORDS[explained_target(rows)]
    return table.reset_index()


#: Where the FracAtlas folder a user names on any page is kept for this session, so every page that
#: draws FracAtlas pictures (Heat-map accuracy, Data map, the quiz) reads the same folder.
FOLDER_KEY = "fracatlas_folder"


def fracatlas_root(text: str | None = None) -> tuple[Path | None, str | None]:
    """The FracAtlas folder to draw images from: ``text`` if given, else the one named on any page this
    session, else FRACATLAS_ROOT, else the shipped samples; (root, None), or (None, one-sentence reason),
    or (None, None) when none is set."""
    candidate = (
        (text or "").strip()
        or str(st.session_state.get(FOLDER_KEY) or "").strip()
        or os.environ.get("FRACATLAS_ROOT", "").strip()
    )
    if not candidate:
        if (SAMPLES_ROOT / fracatlas.LABELS_FILE).is_file():
            return SAMPLES_ROOT.resolve(), None
        return None, None
    try:
        return fracatlas.resolve_root(candidate), None
    except fracatlas.FracAtlasError as exc:
        return None, str(exc)


def folder_input(key: str) -> tuple[Path | None, str | None]:
    """The "FracAtlas folder" box: what the user types on one page is the folder of every page this session."""
    if key not in st.session_state:
        st.session_state[key] = str(st.session_state.get(FOLDER_KEY) or "")
    text = st.text_input(
        "FracAtlas folder for the pictures",
        key=key,
        placeholder="../shared/fracatlas",
        on_change=lambda: st.session_state.__setitem__(FOLDER_KEY, st.session_state[key]),
        help="The full FracAtlas download (labels.csv and images/). Empty: FRACATLAS_ROOT, else "
        "the few FracAtlas radiographs shipped with the app.",
    )
    return fracatlas_root(text)


def image_root(file: str) -> Path | None:
    """The folder that holds a FracAtlas image: the user's FracAtlas folder (fracatlas_root), else the
    app's shipped samples; None when neither has it."""
    root, _ = fracatlas_root()
    samples = SAMPLES_ROOT if (SAMPLES_ROOT / fracatlas.LABELS_FILE).is_file() else None
    for candidate in (root, samples):
        if candidate is not None and fracatlas.image_file(candidate, file).is_file():
            return candidate
    return None


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
        records.append(
            {
                "map": name,
                "hit": scores.hit,
                "energy inside": scores.energy,
                "IoU at Otsu": scores.iou,
                "Dice at Otsu": scores.dice,
            }
        )
    return pd.DataFrame(records)


def outlined_view(
    ref: str, pixels: np.ndarray, heatmap: np.ndarray, picture: np.ndarray
) -> tuple[np.ndarray, pd.DataFrame | None]:
    """For a FracAtlas view with an outline: the picture with the outline drawn and this view's
    scores (:func:`outline_scores`); any other view: the picture unchanged and None."""
    mask = expert_outline(ref)
    if mask is None or mask.shape != pixels.shape:
        return picture, None
    return draw_outline(picture, mask), outline_scores(heatmap, pixels, mask)
