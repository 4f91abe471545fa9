"""Image and study prediction (``python -m core.predict`` is its command line).

Study probability = mean of its views' probabilities (MURA paper); the verdict compares it
with the model card's threshold for the body part (chosen on train's holdout patients).

    python -m core.predict [--model NAME] [--study] [--study-type XR_HUMERUS]
                           [--cam METHOD --layer NAME --out DIR] [--device cuda] [--backend onnx] FILE...

prints one JSON object per input file (and, with --study, one for the study). A file that
cannot be read prints ``error: FILE: reason`` on stderr; the others are still processed and
the exit status is 2. ``--backend onnx`` computes the probabilities on ONNX Runtime (core.model.backends):
worth it for many files, since the first run exports the model (about 20 s) and each run starts a
session; the default, torch, suits a few files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from core.data.preprocess import letterbox, to_model_input
from core.model.checkpoint import LoadedModel

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_THREADS",
    "StudyPrediction",
    "configure_threads",
    "model_inputs",
    "output_probabilities",
    "probabilities",
    "predict_batch",
    "predict_batch_outputs",
    "predict_image_outputs",
    "predict_images",
    "study_probability",
    "predict_study",
]

#: Inference uses a fixed thread count so latency is predictable; 2 = this project's reference laptop.
DEFAULT_THREADS = 2
#: Images per forward pass. Small batches stay in the CPU's cache: on the reference laptop batch 4
#: ran the shipped ensemble 1.4x faster per image than batch 16 (bench/bench_evaluate.py).
DEFAULT_BATCH_SIZE = 4


def configure_threads(threads: int = DEFAULT_THREADS) -> None:
    """Fix torch's intra-op threads once per process (call at start-up, not per request)."""
    torch.set_num_threads(max(1, threads))


def model_inputs(loaded: LoadedModel, images: Sequence[np.ndarray]) -> torch.Tensor:
    """Letterbox and normalise greyscale uint8 arrays into one (N, 3, S, S) batch."""
    canvases = torch.stack([letterbox(pixels, loaded.input_size)[0] for pixels in images])
    return to_model_input(canvases, loaded.config.mean, loaded.config.std)


def uses_flip_tta(loaded: LoadedModel) -> bool:
    """Whether the model card asks for lateral-flip test-time augmentation."""
    return bool(loaded.card.get("tta", False))


def output_probabilities(model: torch.nn.Module, batch: torch.Tensor, *, flip_tta: bool) -> torch.Tensor:
    """(N, outputs) float32 probabilities of a prepared batch (column 0 P(abnormal), column 1
    P(fracture) where the model has it); with flip TTA, the mean over each image and its mirror.
    Training's holdout predictions and every inference path share this one definition."""
    result = torch.sigmoid(model(batch).float())
    if flip_tta:
        mirrored = torch.sigmoid(model(torch.flip(batch, dims=[-1])).float())
        result = (result + mirrored) / 2
    return result


def probabilities(model: torch.nn.Module, batch: torch.Tensor, *, flip_tta: bool) -> torch.Tensor:
    """P(abnormal) (float32, (N,)) of a prepared batch: column 0 of :func:`output_probabilities`."""
    return output_probabilities(model, batch, flip_tta=flip_tta)[:, 0]


@torch.inference_mode()
def predict_batch_outputs(loaded: LoadedModel, batch: torch.Tensor) -> np.ndarray:
    """(N, outputs) probabilities of a prepared (CPU) batch, with the flip TTA the model card asks
    for; the batch moves to the model's device here, so callers decode on CPU cores whatever the device."""
    batch = batch.to(next(loaded.model.parameters()).device, non_blocking=True)
    return output_probabilities(loaded.model, batch, flip_tta=uses_flip_tta(loaded)).double().cpu().numpy()


def predict_batch(loaded: LoadedModel, batch: torch.Tensor) -> np.ndarray:
    """P(abnormal) for a prepared (CPU) batch: column 0 of :func:`predict_batch_outputs`."""
    return predict_batch_outputs(loaded, batch)[:, 0]


def predict_image_outputs(
    loaded: LoadedModel, images: Sequence[np.ndarray], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """(N, outputs) probabilities of greyscale uint8 images, in batches (one forward serves every output)."""
    out = [
        predict_batch_outputs(loaded, model_inputs(loaded, images[start : start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.empty((0, len(loaded.outputs)))


def predict_images(
    loaded: LoadedModel, images: Sequence[np.ndarray], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """P(abnormal) for each greyscale uint8 image, in batches."""
    return predict_image_outputs(loaded, images, batch_size=batch_size)[:, 0]


def study_probability(view_probabilities: Sequence[float] | np.ndarray) -> float:
    """The MURA paper's study probability: the mean of its views' probabilities."""
    if len(view_probabilities) == 0:
        raise ValueError("a study needs at least one view")
    return float(np.mean(view_probabilities))


@dataclass(frozen=True)
class StudyPrediction:
    """One study's view probabilities, their mean, and the threshold it is judged at."""

    view_probabilities: tuple[float, ...]
    probability: float
    threshold: float
    study_type: str | None

    @property
    def verdict(self) -> Literal["abnormal", "normal"]:
        """``"abnormal"`` when the study probability reaches the threshold, else ``"normal"``."""
        return "abnormal" if self.probability >= self.threshold else "normal"


def predict_study(
    loaded: LoadedModel, images: Sequence[np.ndarray], *, study_type: str | None = None
) -> StudyPrediction:
    """Predict every view of one study and combine them as the MURA paper does."""
    views = predict_images(loaded, images)
    return StudyPrediction(
        view_probabilities=tuple(float(p) for p in views),
        probability=study_probability(views),
        threshold=loaded.threshold_for(study_type),
        study_type=study_type,
    )
