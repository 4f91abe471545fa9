"""Image and study prediction, and the ``python -m core.predict`` command line.

Study probability = mean of its views' probabilities (MURA paper); the verdict compares it
with the model card's threshold for the body part (chosen on train's holdout patients).

    python -m core.predict [--model NAME] [--study] [--study-type XR_HUMERUS]
                           [--cam METHOD --layer NAME --out DIR] [--device cuda] [--backend onnx] FILE...

prints one JSON object per input file (and, with --study, one for the study). A file that
cannot be read prints ``error: FILE: reason`` on stderr; the others are still processed and
the exit status is 2. ``--backend onnx`` computes the probabilities on ONNX Runtime (core.backends):
worth it for many files, since the first run exports the model (about 20 s) and each run starts a
session; the default, torch, suits a few files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from core.artifacts import printable
from core.models import DEFAULT_MODEL, LoadedModel, ModelLoadError, load_model
from core.preprocess import letterbox, to_model_input

if TYPE_CHECKING:
    from core.scope import ScopeAssessment

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_THREADS",
    "StudyPrediction",
    "configure_threads",
    "model_inputs",
    "probabilities",
    "predict_batch",
    "predict_images",
    "study_probability",
    "predict_study",
    "main",
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


def probabilities(model: torch.nn.Module, batch: torch.Tensor, *, flip_tta: bool) -> torch.Tensor:
    """P(abnormal) (float32) of a prepared batch; with flip TTA, the mean over each image and its
    mirror. Training's holdout predictions and every inference path share this one definition."""
    result = torch.sigmoid(model(batch).squeeze(1).float())
    if flip_tta:
        mirrored = torch.sigmoid(model(torch.flip(batch, dims=[-1])).squeeze(1).float())
        result = (result + mirrored) / 2
    return result


@torch.inference_mode()
def predict_batch(loaded: LoadedModel, batch: torch.Tensor) -> np.ndarray:
    """P(abnormal) for a prepared (CPU) batch, with the flip TTA the model card asks for; the batch
    moves to the model's device here, so callers decode on CPU cores whatever the device."""
    batch = batch.to(next(loaded.model.parameters()).device, non_blocking=True)
    return probabilities(loaded.model, batch, flip_tta=uses_flip_tta(loaded)).double().cpu().numpy()


def predict_images(
    loaded: LoadedModel, images: Sequence[np.ndarray], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """P(abnormal) for each greyscale uint8 image, in batches."""
    out = [
        predict_batch(loaded, model_inputs(loaded, images[start : start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.empty(0)


def study_probability(view_probabilities: Sequence[float]) -> float:
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


def _write_cam(loaded: LoadedModel, pixels: np.ndarray, file: str, method: str,
               layer: str | None, out_dir: Path) -> tuple[dict[str, str], dict[str, object]]:
    """Write one file's heat map and overlay; return the JSON record's paths and the map's settings."""
    from PIL import Image

    from core.explain import explain
    from core.overlay import overlay

    explanation = explain(loaded, pixels, method=method, layers=[layer] if layer else None)
    stem = Path(file).stem or "image"
    heatmap_path = out_dir / f"{stem}_{method}.npy"
    overlay_path = out_dir / f"{stem}_{method}.png"
    np.save(heatmap_path, explanation.heatmap)
    Image.fromarray(overlay(pixels, explanation.heatmap)).save(overlay_path)
    return {"heatmap": str(heatmap_path), "overlay": str(overlay_path)}, explanation.describe()


def _write_manifest(loaded: LoadedModel, out_dir: Path, settings: dict[str, object],
                    maps: list[dict[str, object]]) -> None:
    """``manifest.json`` beside the maps: what made them (model, weights' SHA-256, method, layers,
    target, library versions), so a folder of heat maps still says what it is when passed on."""
    import hashlib
    import importlib.metadata
    import platform

    from core.artifacts import ModelArtifacts
    from core.atomic import write_text
    from core.overlay import DEFAULT_COLORMAP, DEFAULT_OPACITY

    checkpoint = ModelArtifacts(loaded.directory).checkpoint
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest() if checkpoint.is_file() else None
    packages = ("torch", "torchvision", "grad-cam", "numpy", "opencv-python-headless", "opencv-python")
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    manifest = {
        "model": loaded.name, "architecture": loaded.config.name, "input_size": loaded.input_size,
        "checkpoint_sha256": digest, **settings,
        "heatmap": "float32 (height, width) in [0, 1] at the image's resolution, min-max normalised per image "
                   "over the image (never the letterbox padding); raw_peak is the largest raw CAM value before "
                   "that scaling (null for FullGrad)",
        "overlay": {"colormap": DEFAULT_COLORMAP, "opacity": DEFAULT_OPACITY},
        "versions": versions,
        "files": maps,
    }
    write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")


def _printable(file: str) -> str:
    """A file name as text: undecodable bytes (kept by Python as lone surrogates) become U+FFFD,
    so the JSON and error lines stay valid UTF-8."""
    return file.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def _scope_fields(scopes: Sequence[ScopeAssessment]) -> dict[str, object]:
    """The fields every JSON line carries: the predicted body part, whether it is out of scope, and the
    scope score (higher = further out of scope; >= 0.5 flagged). For a study, the views' most probable
    body part (mean of their probabilities), flagged if any view is, scored by its furthest view.
    All three are null for a model without a scope head."""
    if not scopes:
        return {"body_part": None, "out_of_scope": None, "scope_score": None}
    parts = scopes[0].probabilities
    mean = {part: sum(scope.probabilities[part] for scope in scopes) / len(scopes) for part in parts}
    return {"body_part": max(mean, key=mean.__getitem__),
            "out_of_scope": any(scope.out_of_scope for scope in scopes),
            "scope_score": round(max(scope.scope_score for scope in scopes), 4)}


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.predict``: one JSON line per file (and per study); exit status 2 if a file failed."""
    from core.backends import add_backend_argument, batch_predictor, resolve_backend
    from core.devices import DeviceError, add_device_arguments, autocast, on_device, resolve_device
    from core.imaging import RadiographDecodeError, load_radiograph
    from core.scope import ScopeHeadError, assess_images, head_for, study_scope

    parser = argparse.ArgumentParser(prog="python -m core.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a folder under weights/")
    parser.add_argument("--study", action="store_true", help="treat the files as views of one study")
    parser.add_argument("--study-type", help="body part for the threshold, e.g. XR_HUMERUS")
    parser.add_argument("--cam", metavar="METHOD", help="also write a CAM (e.g. GradCAM) per file")
    parser.add_argument("--layer", help="CAM target layer (a name from the model's layer list)")
    parser.add_argument("--out", type=Path,
                        help="folder for CAM overlays (.png), heat maps (.npy) and manifest.json (what made them)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    add_backend_argument(parser, default="torch")
    add_device_arguments(parser)
    args = parser.parse_args(argv)
    if args.cam and not args.out:
        parser.error("--cam needs --out DIR")
    configure_threads(args.threads)
    try:
        device = resolve_device(args.device, args.precision)
        loaded = on_device(load_model(args.model), device)
        head_for(loaded)
    except (ModelLoadError, ScopeHeadError, DeviceError) as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return 2
    backend, reason = resolve_backend(args.backend, device)
    if reason:
        print(f"note: {reason}", file=sys.stderr, flush=True)
    predict = batch_predictor(loaded, backend)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)

    failed = False
    view_probabilities: list[float] = []
    good_files: list[str] = []
    maps: list[dict[str, object]] = []
    cam_settings: dict[str, object] = {}
    scopes: list[ScopeAssessment] = []
    for file in args.files:
        try:
            radiograph = load_radiograph(Path(file))
            pixels = radiograph.pixels
            with autocast(device, args.precision):  # the CAM below keeps fp32 gradients
                probability = float(predict(model_inputs(loaded, [pixels]))[0])
            record: dict[str, object] = {"file": _printable(file), "probability": round(probability, 6)}
            assessed = assess_images(loaded, [pixels])
            if assessed is not None:
                scope = assessed[0]
                if not radiograph.looks_like_radiograph:
                    scope = replace(scope, colour_image=True)
                record |= _scope_fields([scope])
                record["scope"] = scope.as_json()
                scopes.append(scope)
            else:
                record |= _scope_fields([])
            if args.cam:
                paths, described = _write_cam(loaded, pixels, file, args.cam, args.layer, args.out)
                record |= paths
                maps.append({"file": record["file"], **paths, "probability": described.pop("probability"),
                             "raw_peak": described.pop("raw_peak")})
                cam_settings = described
        except (RadiographDecodeError, OSError, ValueError) as exc:
            print(f"error: {printable(file)}: {printable(exc)}", file=sys.stderr)
            failed = True
            continue
        view_probabilities.append(float(record["probability"]))
        good_files.append(_printable(file))
        print(json.dumps(record), flush=True)
    if maps:
        _write_manifest(loaded, args.out, cam_settings, maps)
    if args.study and view_probabilities:
        suggested, scope_reason = study_scope(scopes)
        study = StudyPrediction(tuple(view_probabilities), study_probability(view_probabilities),
                                loaded.threshold_for(args.study_type), args.study_type)
        print(json.dumps({
            "study": good_files,
            "study_type": study.study_type,
            "probability": round(study.probability, 6),
            "threshold": study.threshold,
            # No verdict for a study the scope head flags outside the model's training (say why instead),
            # unless the user named the body part.
            "verdict": None if scope_reason and not args.study_type else study.verdict,
            "in_scope": scope_reason is None,
            "suggested_study_type": suggested,
        } | _scope_fields(scopes) | ({"scope_reason": scope_reason} if scope_reason else {})), flush=True)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
