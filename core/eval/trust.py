"""Can the heat maps be trusted? Sanity checks, faithfulness and how far the metrics agree, over a
fixed sample of radiographs (``python -m core.trust --mura-root PATH [--fracatlas-root DIR]``).

Design notes: docs/architecture.md, "Can the heat maps be trusted?".
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric
from scipy import stats
from skimage.metrics import structural_similarity
from torch import nn
from tqdm import tqdm

from core.cam.explain import METHODS, ClassProbability, OutputLogit, Target, explain_grid, opposite_target
from core.cam.faithfulness import faithfulness, ranks
from core.cam.overlay import resize_heatmap
from core.data import fracatlas, mura
from core.data.imaging import RadiographDecodeError, load_radiograph
from core.data.preprocess import Letterbox, letterbox, to_model_input
from core.eval import metrics
from core.eval.localization_sweep import default_methods as localize_default_methods
from core.eval.localization_sweep import default_target, explained_target, untrained
from core.eval.localization_sweep import read_cache as read_localization
from core.model.card import trained_study_types
from core.model.checkpoint import LoadedModel, load_model
from core.model.registry import MeanProbabilityEnsemble
from core.store import atomic
from core.store.artifacts import CachedPair, CachePairError, ModelArtifacts, read_pair, write_pair

__all__ = [
    "SANITY_THRESHOLD",
    "METRICS",
    "Sample",
    "map_similarity",
    "cascade_cuts",
    "randomised_models",
    "perturbation_aucs",
    "confidence_changes",
    "default_methods",
    "default_layers",
    "sample_images",
    "image_rows",
    "summary_of",
    "read_cache",
    "rank_of",
    "sanity_by_map",
    "method_verdicts",
    "headline",
    "sweep",
]

#: A method whose trained and randomised maps keep a mean rank correlation above this fails the
#: model-randomisation check (its interval decides: wholly above fails, wholly below passes).
SANITY_THRESHOLD = 0.5
#: Deletion/insertion curve points (fractions 0, 1/n, ..., 1 of the image's pixels): 5 keeps a map at
#: 8 forward passes of the 4-member ensemble; RISE used one point per 224 pixels. A coarse curve ranks
#: maps alike (the area between two points is linear), and the cost is what fits the shared 2 cores.
CURVE_STEPS = 5
#: RISE's insertion starts from the image blurred by this Gaussian (kernel 11, sigma 5 at 224 px).
_BLUR_KERNEL, _BLUR_SIGMA = 11, 5.0
_BATCH = 8
_SAVE_EVERY = 4
#: The default sample, as shipped. At about 20 s of CPU per image (one thread) the default run fits
#: 45 minutes on two quiet cores with room to spare; under the shared machine's load it took longer (see
#: README). --per-part and --fracatlas-n raise it: a larger sample keeps the smaller one's images, so a
#: rerun with larger counts only measures the new ones.
DEFAULT_PER_PART = 20
DEFAULT_FRACATLAS_N = 20
#: Metrics that rank methods: column, plain name, whether higher is better.
METRICS: dict[str, tuple[str, bool]] = {
    "randomisation": ("rank correlation with the layers above random", False),
    "logit": ("rank correlation of the two classes' maps (e.g. P(normal) and P(abnormal))", False),
    "deletion_auc": ("deletion AUC", False),
    "insertion_auc": ("insertion AUC", True),
    "drop": ("Average Drop %", False),
    "increase": ("Increase in Confidence %", True),
    "road": ("ROAD", True),
    "localisation": ("FracAtlas hit rate", True),
}
#: Bumped when the summary's layout changes: a cached summary of another version is refused (re-run
#: the CLI, which only rewrites the summary when every row is cached).
SUMMARY_VERSION = 2
_FAITHFULNESS = ("deletion_auc", "insertion_auc", "drop", "increase", "road")


def _cascade_column(kind: str, stage: int) -> str:
    return f"{kind}_s{stage}"


# --- metrics on maps ------------------------------------------------------------------------------


def map_similarity(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """Spearman rank correlation and SSIM of two same-sized [0, 1] maps.

    A map that became flat while the other has structure shares no ordering with it: its rank
    correlation is 0 (scipy would return NaN). Two flat maps give NaN: nothing to compare.
    """
    if first.shape != second.shape:
        raise ValueError(f"maps of shapes {first.shape} and {second.shape} cannot be compared")
    flat_first, flat_second = np.ptp(first) == 0, np.ptp(second) == 0
    if flat_first and flat_second:
        rho = float("nan")
    elif flat_first or flat_second:
        rho = 0.0
    else:
        rho = float(stats.spearmanr(first.ravel(), second.ravel()).statistic)
    ssim = float(structural_similarity(first.astype(np.float64), second.astype(np.float64), data_range=1.0))
    return rho, ssim


def _comparable(heatmap: np.ndarray, placement: Letterbox) -> np.ndarray:
    """A map at the model's resolution of the image: finer detail than the model saw is interpolation."""
    return resize_heatmap(heatmap, placement.height, placement.width)


# --- cascading randomisation ----------------------------------------------------------------------


def _member(model: nn.Module) -> nn.Module:
    return model.members[0] if isinstance(model, MeanProbabilityEnsemble) else model


def cascade_cuts(loaded: LoadedModel, target: Target = "abnormal") -> list[tuple[str, list[str]]]:
    """The cascade's stages, top down: (label, paths of a member's modules with weights re-initialised).

    Each stage re-initialises everything above the next shallower named layer on ``target``'s path
    (the model's ``layers_for``), so the named layer itself is random from its own stage on: output
    layer only, then "<deepest layer> and up", ..., then every layer. Modules are cut by module order,
    which is execution order along each path in these networks (a two-output model's fracture branch
    comes after the whole MURA network: cutting "above block 5" also re-initialises MURA's deeper
    blocks, which the fracture output never reads).
    """
    member = _member(loaded.model)
    order = [name for name, _module in member.named_modules()]
    weighted = [name for name, module in member.named_modules() if list(module.parameters(recurse=False))]

    def end_of(path: str) -> int:
        return max(i for i, name in enumerate(order) if name == path or name.startswith(path + "."))

    layer_names = loaded.config.layers_for(target)
    ends = [end_of(loaded.cam_layers[name]) for name in layer_names]
    cuts = [("output layer", ends[0])]
    cuts += [(f"{name} and up", ends[i + 1]) for i, name in enumerate(layer_names[:-1])]
    cuts.append(("every layer", -1))
    return [(label, [name for name in weighted if order.index(name) > end]) for label, end in cuts]


def randomised_models(
    loaded: LoadedModel, *, seed: int = 0, target: Target = "abnormal"
) -> list[tuple[str, LoadedModel]]:
    """One model per cascade stage, each re-initialising (``reset_parameters``, seeded) the next modules.

    Cumulative, as in Adebayo et al.: a stage keeps the random weights of the stages above it.
    Every ensemble member is randomised alike (same modules, its own draws).
    """
    network = copy.deepcopy(loaded.model)
    members = network.members if isinstance(network, MeanProbabilityEnsemble) else [network]
    done: set[str] = set()
    stages = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for label, paths in cascade_cuts(loaded, target):
            for path in [p for p in reversed(paths) if p not in done]:  # top down
                for member in members:
                    reset = getattr(member.get_submodule(path), "reset_parameters", None)
                    if not callable(reset):
                        raise ValueError(f"{path} has weights but no reset_parameters; it cannot be randomised.")
                    reset()
                done.add(path)
            stages.append((label, dataclasses.replace(loaded, model=copy.deepcopy(network).eval())))
    return stages


# --- faithfulness ---------------------------------------------------------------------------------


def _probabilities(loaded: LoadedModel, canvases: list[torch.Tensor], target: Target) -> np.ndarray:
    """P(target) of uint8 canvases (1, S, S), in batches."""
    scores = ClassProbability(target)
    out = []
    with torch.inference_mode():
        for start in range(0, len(canvases), _BATCH):
            batch = to_model_input(torch.stack(canvases[start : start + _BATCH]), loaded.config.mean, loaded.config.std)
            out.append(scores(loaded.model(batch)).reshape(-1).float().numpy())
    return np.concatenate(out)


def perturbation_aucs(
    loaded: LoadedModel,
    pixels: np.ndarray,
    heatmaps: Sequence[np.ndarray],
    *,
    target: Target = "abnormal",
    steps: int = CURVE_STEPS,
) -> list[tuple[float, float]]:
    """Deletion and insertion AUC (RISE) of each map: P(target) as the most relevant pixels go or come.

    Deletion blacks out the image's pixels most relevant first (lower AUC: more faithful); insertion
    puts them back onto a blurred copy (higher AUC: more faithful). Pixels are ranked within the image
    at the model's resolution, ties broken at random (seeded); the letterbox padding never changes.
    Hand-written: pytorch_grad_cam has no deletion/insertion curve, and Quantus' pixel flipping
    assumes a multi-class softmax output.
    """
    if steps < 2:
        raise ValueError("steps must be at least 2")
    canvas, placement = letterbox(pixels, loaded.input_size)
    region = (
        slice(None),
        slice(placement.top, placement.top + placement.height),
        slice(placement.left, placement.left + placement.width),
    )
    blurred = canvas.clone()
    smooth = cv2.GaussianBlur(canvas[0].numpy(), (_BLUR_KERNEL, _BLUR_KERNEL), _BLUR_SIGMA)
    blurred[region] = torch.from_numpy(smooth)[region[1:]]
    black = canvas.clone()
    black[region] = 0
    fractions = np.linspace(0.0, 1.0, steps + 1)
    canvases = [canvas, black, blurred]  # the curves' shared ends
    for heatmap in heatmaps:
        order = torch.from_numpy(ranks(_comparable(heatmap, placement)))
        for fraction in fractions[1:-1]:
            chosen = order > 1.0 - fraction
            deleted, inserted = canvas.clone(), blurred.clone()
            deleted[region][:, chosen] = 0
            inserted[region][:, chosen] = canvas[region][:, chosen]
            canvases += [deleted, inserted]
    scores = _probabilities(loaded, canvases, target)
    original, all_deleted, all_blurred = scores[:3]
    inner = scores[3:].reshape(len(heatmaps), steps - 1, 2)
    aucs = []
    for curve in inner:
        deletion = np.concatenate([[original], curve[:, 0], [all_deleted]])
        insertion = np.concatenate([[all_blurred], curve[:, 1], [original]])
        aucs.append((float(np.trapezoid(deletion, fractions)), float(np.trapezoid(insertion, fractions))))
    return aucs


def _multiply_pixels(
    mean: torch.Tensor, std: torch.Tensor, model_input: torch.Tensor, canvas_map: torch.Tensor
) -> torch.Tensor:
    """The image times the map in pixel space (Chattopadhyay et al.), back in the model's normalisation.

    pytorch_grad_cam's own perturbation multiplies the normalised tensor, where 0 is mid-grey.
    """
    return ((model_input * std + mean) * canvas_map - mean) / std


def confidence_changes(
    loaded: LoadedModel,
    pixels: np.ndarray,
    heatmaps: Sequence[np.ndarray],
    probability: float,
    *,
    target: Target = "abnormal",
) -> list[tuple[float, float]]:
    """Per map: Drop in confidence, max(0, Y - O) / Y in %, and Increase (100 if O > Y, else 0).

    Y is P(target) of the image, O of the image multiplied by the map (padding left whole), as in
    Grad-CAM++'s Average Drop and Increase in Confidence; their means over images are the metrics.
    """
    canvas, placement = letterbox(pixels, loaded.input_size)
    model_input = to_model_input(canvas, loaded.config.mean, loaded.config.std)
    canvas_maps = np.ones((len(heatmaps), placement.canvas, placement.canvas), dtype=np.float32)
    for canvas_map, heatmap in zip(canvas_maps, heatmaps, strict=True):
        placement_region = (
            slice(placement.top, placement.top + placement.height),
            slice(placement.left, placement.left + placement.width),
        )
        canvas_map[placement_region] = _comparable(heatmap, placement)
    mean = torch.tensor(loaded.config.mean).view(3, 1, 1)
    std = torch.tensor(loaded.config.std).view(3, 1, 1)
    metric = PerturbationConfidenceMetric(functools.partial(_multiply_pixels, mean, std))
    inputs = model_input.unsqueeze(0).expand(len(heatmaps), -1, -1, -1)
    targets = [ClassProbability(target)] * len(heatmaps)
    with torch.inference_mode():
        after = np.ravel(metric(inputs, canvas_maps, targets, loaded.model, return_diff=False))
    y = probability if OutputLogit(target).sign > 0 else 1.0 - probability
    return [(100.0 * max(0.0, y - float(o)) / max(y, 1e-6), 100.0 * float(o > y)) for o in after]


# --- one image ------------------------------------------------------------------------------------


def image_rows(
    loaded: LoadedModel,
    pixels: np.ndarray,
    *,
    methods: Sequence[str],
    layers: Sequence[str],
    faithfulness_layers: Sequence[str],
    randomised: Sequence[tuple[str, LoadedModel]],
    road: bool = False,
    target: Target = "abnormal",
) -> list[dict[str, object]]:
    """Rows of one image: one per (method, layer) with its sanity-check similarities and, on the
    faithfulness layers, its faithfulness scores (absent elsewhere; ROAD only with ``road``), all
    explaining ``target`` (the logit check compares it with its opposite class's map). Identical maps
    (GradCAM and HiResCAM before global pooling) are judged once."""
    _canvas, placement = letterbox(pixels, loaded.input_size)
    trained = explain_grid(loaded, pixels, methods=methods, layers=layers, target=target)
    opposite = explain_grid(loaded, pixels, methods=methods, layers=layers, target=opposite_target(target))
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for key, explanation in trained.items():
        reference = _comparable(explanation.heatmap, placement)
        rho, ssim = map_similarity(reference, _comparable(opposite[key].heatmap, placement))
        rows[key] = {
            "method": key[0],
            "layer": key[1],
            "probability": explanation.probability,
            "logit_spearman": rho,
            "logit_ssim": ssim,
        }
    for stage, (_label, model) in enumerate(randomised, start=1):
        for key, heatmap in _randomised_maps(model, pixels, methods, layers, target).items():
            rho, ssim = (
                (float("nan"), float("nan"))
                if heatmap is None
                else map_similarity(_comparable(trained[key].heatmap, placement), _comparable(heatmap, placement))
            )
            rows[key][_cascade_column("spearman", stage)] = rho
            rows[key][_cascade_column("ssim", stage)] = ssim
    judged = [key for key in trained if key[1] in faithfulness_layers]
    if judged:
        probability = next(iter(trained.values())).probability
        distinct = {trained[key].heatmap.tobytes(): key for key in judged}
        firsts = list(distinct.values())
        heatmaps = [trained[key].heatmap for key in firsts]
        scores = {
            key: {
                "deletion_auc": deletion,
                "insertion_auc": insertion,
                "drop": drop,
                "increase": increase,
                **({"road": faithfulness(loaded, pixels, trained[key])} if road else {}),
            }
            for key, (deletion, insertion), (drop, increase) in zip(
                firsts,
                perturbation_aucs(loaded, pixels, heatmaps, target=target),
                confidence_changes(loaded, pixels, heatmaps, probability, target=target),
                strict=True,
            )
        }
        for key in judged:
            rows[key].update(scores[distinct[trained[key].heatmap.tobytes()]])
    return list(rows.values())


def _randomised_maps(
    model: LoadedModel, pixels: np.ndarray, methods: Sequence[str], layers: Sequence[str], target: Target
) -> dict[tuple[str, str], np.ndarray | None]:
    """Each (method, layer) map of a randomised model; None where the method cannot make one.

    Random weights can leave a layer's activations all zero, where KPCA-CAM's eigen-solver stops
    (scipy's ArpackError, a RuntimeError); such a map is left out of the means rather than guessed.
    """
    try:
        explained = explain_grid(model, pixels, methods=methods, layers=layers, target=target)
        return {key: e.heatmap for key, e in explained.items()}
    except (RuntimeError, ValueError):
        if len(methods) == 1:
            return {(methods[0], layer): None for layer in layers}
    maps: dict[tuple[str, str], np.ndarray | None] = {}
    for method in methods:
        maps.update(_randomised_maps(model, pixels, [method], layers, target))
    return maps


def default_methods() -> list[str]:
    """core.localize's default sweep less KPCA-CAM, whose kernel PCA per layer, member and cascade stage
    cost more than every other method together here (opt-in with --methods)."""
    return [m for m in localize_default_methods() if m != "KPCA-CAM"]


def default_layers(loaded: LoadedModel, target: Target = "abnormal") -> list[str]:
    """The default layer and the middle named one on ``target``'s path (stride 16 in the shipped models,
    where core.localize found the sharpest maps): the checks at the layer shown first, and at a second."""
    names = loaded.config.layers_for(target)
    return list(dict.fromkeys([names[0], names[len(names) // 2]]))


# --- the sample -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One image of the fixed sample: where it comes from and how to read it (no pixels)."""

    image: str
    source: str
    part: str
    label: int
    file: Path


def sample_images(
    mura_root: Path | None,
    fracatlas_root: Path | None,
    *,
    study_types: Sequence[str],
    per_part: int,
    fracatlas_n: int,
    seed: int = 0,
    fracatlas_pool: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> list[Sample]:
    """A seeded sample: ``per_part`` MURA valid/ studies of each body part (one view each) and
    ``fracatlas_n`` upper-limb FracAtlas images (those ``fracatlas_pool`` keeps, e.g. the ones a
    fracture output never trained on). The same arguments always give the same images, and a larger
    count keeps the smaller one's images (a nested sample), so a cache grows by resuming."""
    chosen: list[Sample] = []
    if mura_root is not None and per_part > 0:
        images = mura.read_images(mura_root, "valid")
        for index, study_type in enumerate(study_types):
            part = images[images["study_type"] == study_type]
            rng = np.random.default_rng([seed, index])
            studies = part["study_path"].drop_duplicates().sort_values().to_numpy()
            order = rng.permutation(len(studies))[:per_part]
            for study in studies[order]:
                views = part[part["study_path"] == study].sort_values("path")
                view = views.iloc[int(rng.integers(len(views)))]
                chosen.append(
                    Sample(
                        view["path"], "MURA", study_type, int(view["label"]), mura.image_file(mura_root, view["path"])
                    )
                )
    if fracatlas_root is not None and fracatlas_n > 0:
        images = fracatlas.read_images(fracatlas_root)
        if fracatlas_pool is not None:
            images = fracatlas_pool(images)
        upper = images[images["upper_limb"]].sort_values("file").reset_index(drop=True)
        order = np.random.default_rng([seed, 1_000_003]).permutation(len(upper))[:fracatlas_n]
        for row in upper.iloc[order].itertuples(index=False):
            chosen.append(
                Sample(
                    str(row.file),
                    "FracAtlas",
                    str(row.region),
                    int(row.fractured),
                    fracatlas.image_file(fracatlas_root, str(row.file)),
                )
            )
    return chosen


# --- the cache ------------------------------------------------------------------------------------

_TEXT_COLUMNS = ("image", "source", "part", "method", "layer")
_KEY_COLUMNS = ["image", "method", "layer"]


def _row_columns(n_stages: int) -> list[str]:
    cascade = [_cascade_column(kind, stage) for stage in range(1, n_stages + 1) for kind in ("spearman", "ssim")]
    return [
        *_TEXT_COLUMNS[:3],
        "label",
        *_TEXT_COLUMNS[3:],
        "probability",
        "logit_spearman",
        "logit_ssim",
        *cascade,
        *_FAITHFULNESS,
        "seconds",
    ]


def _parse_rows(source: Path | StringIO, name: str) -> pd.DataFrame:
    rows = pd.read_csv(source, keep_default_na=False, na_values=[""], dtype={c: str for c in _TEXT_COLUMNS})
    n_stages = sum(c.startswith("spearman_s") for c in rows.columns)
    missing = [c for c in _row_columns(n_stages) if c not in rows.columns]
    if missing or not n_stages:
        raise ValueError(f"{name} lacks the column(s) {', '.join(missing) or 'spearman_s1'}; move it away and re-run.")
    return rows


def _rows_text(rows: pd.DataFrame, n_stages: int) -> str:
    ordered = rows.sort_values(_KEY_COLUMNS, kind="stable")[_row_columns(n_stages)].infer_objects()
    return ordered.to_csv(index=False, float_format="%.6g")


#: The summary key that holds the SHA-256 of the rows it summarises.
_ROWS_HASH_KEY = "rows_sha256"


def read_cache(files: ModelArtifacts, target: str = "abnormal") -> CachedPair | None:
    """The cached sweep of ``files``' model explaining ``target``'s output (rows as ``table``, and their
    summary), or None before the first finished one.

    Raises:
        CachePairError: unreadable files, rows that are not the ones summarised, or a summary of
        another version.
    """
    rows_path, summary_path = files.resolve(files.trust_rows(target)), files.resolve(files.trust_summary(target))
    pair = read_pair(
        rows_path,
        summary_path,
        hash_key=_ROWS_HASH_KEY,
        remedy="re-run python -m core.trust",
        mismatch=f"{rows_path.name} is not the table {summary_path.name} summarises (a run still going "
        "or stopped early); finish it with python -m core.trust.",
        parse=lambda text: _parse_rows(text, rows_path.name),
    )
    if pair is None:
        return None
    if pair.summary.get("version") != SUMMARY_VERSION:
        raise CachePairError(
            f"{summary_path.name} is from another version of core.trust; re-run "
            "python -m core.trust with the same arguments to rewrite it."
        )
    return pair


# --- the summary ----------------------------------------------------------------------------------


def _interval(values: np.ndarray, n_boot: int, seed: int) -> dict[str, float | None]:
    interval = metrics.bootstrap_means(values.reshape(-1, 1), names=["x"], n_boot=n_boot, seed=seed)["x"]
    return {
        key: (None if value is None else round(value, 4))
        for key, value in (("point", interval.point), ("low", interval.low), ("high", interval.high))
    }


def _sanity(interval: dict[str, float | None]) -> str:
    """passes / fails / unclear: where the interval of the rank correlation lies against the threshold."""
    if interval["point"] is None:
        return "unclear"
    if interval["high"] is not None and interval["high"] < SANITY_THRESHOLD:
        return "passes"
    if interval["low"] is not None and interval["low"] > SANITY_THRESHOLD:
        return "fails"
    return "unclear"


def _localisation_hits(files: ModelArtifacts | None, layer: str, target: str) -> dict[str, float]:
    """Hit rate per method at ``layer`` from core.localize's cache, if there is a readable one that
    explains the same ``target`` (a map of P(abnormal) says nothing of P(fracture)'s)."""
    if files is None:
        return {}
    try:
        cache = read_localization(files)
    except CachePairError:
        return {}
    if cache is None or explained_target(cache.table) != target:
        return {}
    return {
        g["method"]: g["hit"]["point"]
        for g in cache.summary["groups"]
        if g.get("layer") == layer and g["hit"]["point"] is not None
    }


def _ranking(values: dict[str, float], higher_better: bool) -> list[str]:
    return sorted(values, key=lambda m: (-values[m] if higher_better else values[m], m))


def summary_of(
    rows: pd.DataFrame,
    *,
    stages: Sequence[str],
    layer_order: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    files: ModelArtifacts | None = None,
    target: str = "abnormal",
) -> dict[str, object]:
    """Per (method, layer): the sanity checks' and faithfulness means with 95% bootstrap CIs over images;
    the verdicts; and each metric's ranking at the default layer with Kendall's tau between them.

    ``layer_order`` names the cascade's layers deepest first (the layers on ``target``'s path; the first
    is the default): the randomisation verdict of layer ``layer_order[i]`` is read at cascade stage i, where
    everything above it is random and it is not.
    """
    default_layer = layer_order[0]
    groups = []
    for (method, layer), group in rows.groupby(["method", "layer"], sort=True):
        entry: dict[str, Any] = {"method": method, "layer": layer, "n_images": int(len(group))}
        entry["logit"] = {
            kind: _interval(group[f"logit_{kind}"].to_numpy(float), n_boot, seed) for kind in ("spearman", "ssim")
        }
        entry["cascade"] = [
            {
                "stage": label,
                **{
                    kind: _interval(group[_cascade_column(kind, i)].to_numpy(float), n_boot, seed)
                    for kind in ("spearman", "ssim")
                },
            }
            for i, label in enumerate(stages, start=1)
        ]
        entry["sanity_stage"] = layer_order.index(layer)
        entry["randomisation"] = _sanity(entry["cascade"][entry["sanity_stage"]]["spearman"])
        entry["logit_check"] = _sanity(entry["logit"]["spearman"])
        for column in (c for c in _FAITHFULNESS if c in group.columns):
            values = group[column].to_numpy(float)
            if np.isfinite(values).any():
                entry[column] = _interval(values, n_boot, seed)
        groups.append(entry)
    return {
        "version": SUMMARY_VERSION,
        "target": target,
        "n_images": int(rows["image"].nunique()),
        "sources": {k: int(v) for k, v in rows.drop_duplicates("image")["source"].value_counts().items()},
        "parts": {k: int(v) for k, v in rows.drop_duplicates("image")["part"].value_counts().items()},
        "stages": list(stages),
        "default_layer": default_layer,
        "sanity_threshold": SANITY_THRESHOLD,
        "curve_steps": CURVE_STEPS,
        "n_boot": n_boot,
        "seed": seed,
        "confidence": metrics.CONFIDENCE,
        "groups": groups,
        "agreement": _agreement(groups, default_layer, _localisation_hits(files, default_layer, target)),
        "sweep_seconds": round(float(rows["seconds"].sum()), 1),
    }


def _agreement(groups: list[dict], layer: str, hits: dict[str, float]) -> dict[str, object]:
    """Each metric's ranking of the methods at ``layer`` and Kendall's tau between every two rankings."""
    at_layer = {g["method"]: g for g in groups if g["layer"] == layer}
    values: dict[str, dict[str, float]] = {
        "randomisation": {m: g["cascade"][g["sanity_stage"]]["spearman"]["point"] for m, g in at_layer.items()},
        "logit": {m: g["logit"]["spearman"]["point"] for m, g in at_layer.items()},
    }
    for column in _FAITHFULNESS:
        values[column] = {m: g[column]["point"] for m, g in at_layer.items() if column in g}
    values["localisation"] = {m: hits[m] for m in at_layer if m in hits}
    values = {k: {m: v for m, v in per.items() if v is not None and np.isfinite(v)} for k, per in values.items()}
    values = {k: per for k, per in values.items() if len(per) >= 2}
    rankings = {k: _ranking(per, METRICS[k][1]) for k, per in values.items()}
    names = list(rankings)
    tau: list[list[float | None]] = []
    for first in names:
        line: list[float | None] = []
        for second in names:
            common = sorted(set(values[first]) & set(values[second]))
            signed = [np.array([values[k][m] * (1 if METRICS[k][1] else -1) for m in common]) for k in (first, second)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a constant ranking: tau is NaN, reported as None
                result = stats.kendalltau(*signed).statistic if len(common) >= 2 else float("nan")
            line.append(None if not np.isfinite(result) else round(float(result), 3))
        tau.append(line)
    return {
        "layer": layer,
        "metrics": names,
        "rankings": rankings,
        "kendall_tau": tau,
        "values": {k: {m: round(float(v), 4) for m, v in per.items()} for k, per in values.items()},
    }


def rank_of(agreement: dict, metric: str, method: str) -> int:
    """1 + the methods strictly better than ``method`` on ``metric``: tied maps share a rank."""
    values = agreement["values"][metric]
    higher = METRICS[metric][1]
    mine = values[method]
    return 1 + sum((v > mine) if higher else (v < mine) for v in values.values())


# --- verdicts -------------------------------------------------------------------------------------


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def sanity_by_map(summary: dict | None) -> dict[tuple[str, str], str]:
    """(method, layer) -> "passes" when both sanity checks pass (randomisation and logit), "fails" when
    either fails, "unclear" otherwise; maps the sweep did not cover are absent. What every ranking of maps
    (Heat-map accuracy, the quiz, the report) consults before it recommends one."""
    results = {}
    for group in (summary or {}).get("groups", []):
        checks = {group.get("randomisation"), group.get("logit_check")}
        results[(group["method"], group["layer"])] = (
            "passes" if checks == {"passes"} else "fails" if "fails" in checks else "unclear"
        )
    return results


def method_verdicts(summary: dict) -> dict[str, str]:
    """One plain sentence per method at the default layer: sanity checks, then its faithfulness ranks."""
    layer = summary["default_layer"]
    agreement = summary["agreement"]
    verdicts = {}
    for group in (g for g in summary["groups"] if g["layer"] == layer):
        method = group["method"]
        rho = group["cascade"][group["sanity_stage"]]["spearman"]
        parts = []
        if group["randomisation"] == "passes":
            parts.append(
                f"passes the randomisation check (its map changes when the layers above are noise: "
                f"rank correlation {rho['point']:.2f})"
            )
        elif group["randomisation"] == "fails":
            parts.append(
                f"fails the randomisation check: with the layers above random its map keeps a rank "
                f"correlation of {rho['point']:.2f}, so it is not reading the model"
            )
        else:
            parts.append(
                f"is unclear on the randomisation check (rank correlation {rho['point']:.2f}, "
                f"interval across {SANITY_THRESHOLD})"
            )
        logit = group["logit"]["spearman"]
        if group["logit_check"] == "fails":
            parts.append(
                f"gives nearly the same map for P(normal) as for P(abnormal) "
                f"(rank correlation {logit['point']:.2f}): it does not know the class"
            )
        elif group["logit_check"] == "passes":
            parts.append("changes its map with the class explained")
        else:
            parts.append(f"is unclear on the logit check (rank correlation {logit['point']:.2f})")
        ranks_said = [
            f"{_ordinal(rank_of(agreement, k, method))} of {len(agreement['rankings'][k])} on {METRICS[k][0]}"
            for k in ("deletion_auc", "insertion_auc", "drop", "road", "localisation")
            if k in agreement["rankings"] and method in agreement["rankings"][k]
        ]
        if ranks_said:
            parts.append("ranks " + ", ".join(ranks_said))
        verdicts[method] = f"{method} " + "; ".join(parts) + "."
    return verdicts


def headline(files: ModelArtifacts, target: str = "abnormal") -> str | None:
    """One sentence for reports: which methods pass both sanity checks and which is most faithful.

    None when no finished, readable cache exists (callers then leave the line out).
    """
    try:
        cache = read_cache(files, target)
    except CachePairError:
        return None
    if cache is None:
        return None
    summary = cache.summary
    at_layer = [g for g in summary["groups"] if g["layer"] == summary["default_layer"]]
    passing = [g["method"] for g in at_layer if g["randomisation"] == "passes" and g["logit_check"] == "passes"]
    failing = [g["method"] for g in at_layer if "fails" in (g["randomisation"], g["logit_check"])]
    best = summary["agreement"]["rankings"].get("deletion_auc", [None])[0]
    text = (
        f"Over {summary['n_images']} radiographs, at the default layer, "
        f"{', '.join(passing) or 'no method'} pass{'es' if len(passing) == 1 else ''} both sanity checks"
    )
    if failing:
        text += f"; {', '.join(failing)} fail{'s' if len(failing) == 1 else ''} one"
    if best:
        text += f"; the most faithful by deletion AUC is {best}"
    return text + "."


# --- the sweep ------------------------------------------------------------------------------------


def _write(
    files: ModelArtifacts,
    rows: pd.DataFrame,
    stages: Sequence[str],
    *,
    layer_order: Sequence[str],
    target: str,
    n_boot: int | None = None,
    seed: int = 0,
) -> None:
    """Write the rows; with ``n_boot``, then the summary of the rows as written and their hash."""
    text = _rows_text(rows, len(stages))
    rows_path = files.trust_rows(target)
    if n_boot is None:
        atomic.write_text(rows_path, text)
    else:
        write_pair(
            rows_path,
            files.trust_summary(target),
            text,
            summary_of(
                _parse_rows(StringIO(text), rows_path.name),
                stages=stages,
                layer_order=layer_order,
                n_boot=n_boot,
                seed=seed,
                files=files,
                target=target,
            ),
            hash_key=_ROWS_HASH_KEY,
        )


def _checked_names(kind: str, names: Sequence[str], known: Sequence[str]) -> list[str]:
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"Unknown {kind}(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(map(repr, known))}."
        )
    return list(dict.fromkeys(names))


def sweep(
    model_name: str,
    *,
    mura_root: Path | None,
    fracatlas_root: Path | None,
    per_part: int,
    fracatlas_n: int,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    faithfulness_layers: Sequence[str] | None = None,
    road: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
    target: Target | None = None,
) -> tuple[Path, Path]:
    """Measure the sample's missing (image, method, layer) rows and write rows and summary.

    ``target`` None explains the model's fracture output where it has one (as core.localize does),
    else P(abnormal). On the fracture output the cascade walks the fracture path's layers and the
    FracAtlas sample leaves out every image that output trained on.

    Raises:
        mura.MuraRootError, fracatlas.FracAtlasError, ModelLoadError, ValueError: one-sentence reasons.
    """
    loaded = load_model(model_name)
    target = target or default_target(loaded.outputs)
    if target not in ("abnormal", "fracture") or target not in loaded.outputs:
        outputs = ", ".join(loaded.outputs)
        raise ValueError(f"core.trust explains an output of {loaded.name!r} ({outputs}), not {target!r}.")
    methods = _checked_names("CAM method", methods or default_methods(), list(METHODS))
    slow = [m for m in methods if METHODS[m].slow or not METHODS[m].uses_layers]
    if slow:
        raise ValueError(
            f"{', '.join(slow)} cannot be swept here: only methods with a layer are compared "
            "layer by layer, and the slow ones would take hours over the sample."
        )
    path = loaded.config.layers_for(target)
    default_layer = path[0]
    layers = _checked_names("layer", layers or default_layers(loaded, target), path)
    faithfulness_layers = _checked_names("layer", faithfulness_layers or [default_layer], layers)
    samples = sample_images(
        mura_root,
        fracatlas_root,
        study_types=trained_study_types(loaded.card),
        per_part=per_part,
        fracatlas_n=fracatlas_n,
        seed=seed,
        fracatlas_pool=(lambda images: untrained(loaded, images)) if target == "fracture" else None,
    )
    if not samples:
        raise ValueError("No image to measure: give --mura-root and/or --fracatlas-root.")
    randomised = randomised_models(loaded, seed=seed, target=target)
    stages = [label for label, _model in randomised]
    files = ModelArtifacts.of(model_name)
    rows_path = files.trust_rows(target)
    if rows_path.is_file():
        rows = _parse_rows(rows_path, rows_path.name)
        if sum(c.startswith("spearman_s") for c in rows.columns) != len(stages):
            raise ValueError(f"{rows_path.name} holds another cascade; move it away and re-run.")
    else:
        rows = pd.DataFrame(columns=_row_columns(len(stages)))
    done = set(map(tuple, rows[_KEY_COLUMNS].astype(str).to_numpy()))
    new_rows: list[dict[str, object]] = []
    unsaved = 0
    for sample in tqdm(samples, desc="Sanity checks", unit="image", disable=not progress):
        todo = [m for m in methods if any((sample.image, m, layer) not in done for layer in layers)]
        if not todo:
            continue
        started = time.perf_counter()
        try:
            pixels = load_radiograph(sample.file).pixels
            measured = image_rows(
                loaded,
                pixels,
                methods=todo,
                layers=layers,
                faithfulness_layers=faithfulness_layers,
                randomised=randomised,
                road=road,
                target=target,
            )
        except (RadiographDecodeError, OSError, ValueError) as exc:
            tqdm.write(f"skipped {sample.image}: {exc}", file=sys.stderr)
            continue
        kept = [row for row in measured if (sample.image, row["method"], row["layer"]) not in done]
        seconds = (time.perf_counter() - started) / max(1, len(kept))
        new_rows += [
            {
                "image": sample.image,
                "source": sample.source,
                "part": sample.part,
                "label": sample.label,
                **row,
                "seconds": seconds,
            }
            for row in kept
        ]
        unsaved += 1
        if unsaved >= _SAVE_EVERY:
            rows = pd.concat([rows, pd.DataFrame(new_rows)], ignore_index=True)
            new_rows, unsaved = [], 0
            _write(files, rows, stages, layer_order=path, target=target)
    if new_rows:
        rows = pd.concat([rows, pd.DataFrame(new_rows)], ignore_index=True)
    rows = rows.reindex(columns=_row_columns(len(stages)))
    wanted = {s.image for s in samples}
    _write(files, rows[rows["image"].isin(wanted)], stages, layer_order=path, target=target, n_boot=n_boot, seed=seed)
    return rows_path, files.trust_summary(target)
