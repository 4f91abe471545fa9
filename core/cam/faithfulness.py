"""How faithful a heat map is to the model: the ROAD score (Rong et al., 2022).

Kept apart from :mod:`core.cam.explain` as pytorch_grad_cam keeps its ``metrics/`` apart from
the CAM classes: a faithfulness metric judges an explanation, it does not make one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst

from core.cam.explain import ClassProbability, Explanation
from core.cam.overlay import resize_heatmap
from core.data.preprocess import letterbox, to_model_input
from core.model.checkpoint import LoadedModel

__all__ = ["faithfulness", "ranks"]

# Percentiles of the image's pixels that ROAD keeps; each costs two imputations.
_ROAD_PERCENTILES = (20, 40, 60, 80)
_ROAD_RNG_LOCK = threading.Lock()


def faithfulness(
    loaded: LoadedModel,
    pixels: np.ndarray,
    explanation: Explanation,
    *,
    percentiles: Sequence[int] = _ROAD_PERCENTILES,
) -> float:
    """ROAD combined score (Rong et al., 2022) of an explanation, in [-1, 1]; higher is better.

    For each percentile q, pytorch_grad_cam's ROAD metrics keep q % of the image's pixels,
    either the most relevant (LeRF: the least relevant are removed) or the least relevant
    (MoRF), fill the removed ones by noisy linear imputation and measure the change in
    P(explained class). The score is mean(LeRF change - MoRF change) / 2: positive when
    removing what the map calls relevant hurts the prediction more than removing the rest,
    about 0 for a map no better than chance, negative for a misleading one.

    pytorch_grad_cam's ROADCombined is not used as is: it takes percentiles over the whole
    canvas, so letterbox padding would count as image, and it keeps ``map < threshold``,
    which keeps nothing when many pixels tie at 0 (common after a CAM's ReLU). Here pixels
    are ranked within the image (ties broken at random, seeded), the padding is ranked so
    that it is never removed, and the percentiles are moved to the canvas accordingly.
    """
    if explanation.heatmap.shape != pixels.shape:
        raise ValueError(f"explanation's heatmap {explanation.heatmap.shape} does not match the image {pixels.shape}")
    if not percentiles or not all(0 < q < 100 for q in percentiles):
        raise ValueError("percentiles must be a non-empty list of values between 0 and 100")
    with torch.inference_mode(False):
        canvas, placement = letterbox(pixels, loaded.input_size)
        model_input = to_model_input(canvas, loaded.config.mean, loaded.config.std).unsqueeze(0)
        model_input = model_input.to(next(loaded.model.parameters()).device)
    image_ranks = ranks(resize_heatmap(explanation.heatmap, placement.height, placement.width))
    image_region = (
        slice(placement.top, placement.top + placement.height),
        slice(placement.left, placement.left + placement.width),
    )
    # MoRF keeps map < threshold: padding at 0 is always kept. LeRF keeps 1 - map < threshold:
    # padding at 1 is always kept.
    morf_map = np.zeros((placement.canvas, placement.canvas), dtype=np.float32)
    lerf_map = np.ones_like(morf_map)
    morf_map[image_region] = image_ranks
    lerf_map[image_region] = image_ranks
    padding_share = 1.0 - placement.height * placement.width / placement.canvas**2
    targets = [ClassProbability(explanation.target)]
    changes = []
    # The imputation adds noise from torch's global generator: seed a private copy of it so
    # the same explanation always gets the same score. Forking the global generator is not
    # thread-safe, hence the lock (the work is CPU-bound, so little is lost).
    with _ROAD_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for q in percentiles:
            canvas_percentile = 100.0 * padding_share + q * (1.0 - padding_share)
            lerf = ROADLeastRelevantFirst(canvas_percentile)(model_input, lerf_map[None], targets, loaded.model)
            morf = ROADMostRelevantFirst(canvas_percentile)(model_input, morf_map[None], targets, loaded.model)
            changes.append(float(np.ravel(lerf)[0] - np.ravel(morf)[0]))
    return float(np.mean(changes) / 2.0)


def ranks(heatmap: np.ndarray) -> np.ndarray:
    """Heat values replaced by their ranks, scaled into (0, 1), ties broken at random (seeded)."""
    flat = heatmap.ravel()
    tie_breaker = np.random.default_rng(0).random(flat.size)
    order = np.lexsort((tie_breaker, flat))
    ranks = np.empty(flat.size, dtype=np.float32)
    ranks[order] = np.arange(1, flat.size + 1, dtype=np.float32) / (flat.size + 1)
    return ranks.reshape(heatmap.shape)
