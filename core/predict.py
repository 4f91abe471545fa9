"""Image and study prediction, and the ``python -m core.predict`` command line.

The command line only; the library is :mod:`core.model.prediction`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from core.cli import add_backend_argument, add_device_arguments
from core.data.imaging import RadiographDecodeError, load_radiograph
from core.model.backends import batch_predictor, resolve_backend
from core.model.checkpoint import DEFAULT_MODEL, LoadedModel, load_model
from core.model.devices import DeviceError, autocast, on_device, resolve_device
from core.model.prediction import DEFAULT_THREADS, StudyPrediction, configure_threads, model_inputs, study_probability
from core.model.registry import FRACTURE, ModelLoadError
from core.scoping.head import (
    ScopeAssessment,
    ScopeHeadError,
    assess_images,
    head_for,
    study_ambiguity,
    study_scope,
    views_in_study_mean,
)
from core.store.artifacts import printable


def _write_cam(
    loaded: LoadedModel, pixels: np.ndarray, file: str, method: str, layer: str | None, out_dir: Path
) -> tuple[dict[str, str], dict[str, object]]:
    """Write one file's heat map and overlay; return the JSON record's paths and the map's settings."""
    from PIL import Image

    from core.cam.explain import explain
    from core.cam.overlay import overlay

    explanation = explain(loaded, pixels, method=method, layers=[layer] if layer else None)
    stem = Path(file).stem or "image"
    heatmap_path = out_dir / f"{stem}_{method}.npy"
    overlay_path = out_dir / f"{stem}_{method}.png"
    np.save(heatmap_path, explanation.heatmap)
    Image.fromarray(overlay(pixels, explanation.heatmap)).save(overlay_path)
    return {"heatmap": str(heatmap_path), "overlay": str(overlay_path)}, explanation.describe()


def _write_manifest(
    loaded: LoadedModel, out_dir: Path, settings: dict[str, object], maps: list[dict[str, object]]
) -> None:
    """``manifest.json`` beside the maps: what made them (model, weights' SHA-256, method, layers,
    target, library versions), so a folder of heat maps still says what it is when passed on."""
    import hashlib
    import importlib.metadata
    import platform

    from core.cam.overlay import DEFAULT_COLORMAP, DEFAULT_OPACITY
    from core.store.artifacts import ModelArtifacts
    from core.store.atomic import write_text

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
        "model": loaded.name,
        "architecture": loaded.config.name,
        "input_size": loaded.input_size,
        "checkpoint_sha256": digest,
        **settings,
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
    return {
        "body_part": max(mean, key=mean.__getitem__),
        "out_of_scope": any(scope.out_of_scope for scope in scopes),
        "scope_score": round(max(scope.scope_score for scope in scopes), 4),
    }


def _fracture(loaded: LoadedModel, outputs: np.ndarray) -> float | None:
    """P(fracture) from one image's output probabilities, rounded as P(abnormal); None without that output."""
    return round(float(outputs[loaded.outputs.index(FRACTURE)]), 6) if FRACTURE in loaded.outputs else None


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m core.predict``: one JSON line per file (and per study); exit status 2 if a file failed."""
    parser = argparse.ArgumentParser(prog="python -m core.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a folder under weights/")
    parser.add_argument("--study", action="store_true", help="treat the files as views of one study")
    parser.add_argument("--study-type", help="body part for the threshold, e.g. XR_HUMERUS")
    parser.add_argument("--cam", metavar="METHOD", help="also write a CAM (e.g. GradCAM) per file")
    parser.add_argument("--layer", help="CAM target layer (a name from the model's layer list)")
    parser.add_argument(
        "--out", type=Path, help="folder for CAM overlays (.png), heat maps (.npy) and manifest.json (what made them)"
    )
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
    view_fractures: list[float] = []
    good_files: list[str] = []
    maps: list[dict[str, object]] = []
    cam_settings: dict[str, object] = {}
    scopes: list[ScopeAssessment] = []
    for file in args.files:
        try:
            radiograph = load_radiograph(Path(file))
            pixels = radiograph.pixels
            with autocast(device, args.precision):  # the CAM below keeps fp32 gradients
                outputs = predict(model_inputs(loaded, [pixels]))[0]
            record: dict[str, Any] = {
                "file": _printable(file),
                "probability": round(float(outputs[0]), 6),
                "fracture_probability": _fracture(loaded, outputs),
            }
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
                maps.append(
                    {
                        "file": record["file"],
                        **paths,
                        "probability": record["probability"],
                        "raw_peak": described.pop("raw_peak"),
                    }
                )
                described.pop("probability")  # the line's own, from the chosen backend: one number per file
                cam_settings = described
        except (RadiographDecodeError, OSError, ValueError) as exc:
            print(f"error: {printable(file)}: {printable(exc)}", file=sys.stderr)
            failed = True
            continue
        view_probabilities.append(float(record["probability"]))
        if record["fracture_probability"] is not None:
            view_fractures.append(float(record["fracture_probability"]))
        good_files.append(_printable(file))
        print(json.dumps(record), flush=True)
    if maps:
        _write_manifest(loaded, args.out, cam_settings, maps)
    if args.study and view_probabilities:
        suggested, scope_reason = study_scope(scopes)
        # Not flagged, but a forearm call that may be a wrist: judged only at a body part the user names.
        ambiguity = None if scope_reason else study_ambiguity(scopes)
        # A flagged view leaves the study's mean (all stay when every view is flagged).
        kept = views_in_study_mean(scopes) if scopes else range(len(view_probabilities))
        mean_of = [view_probabilities[index] for index in kept]
        study = StudyPrediction(
            tuple(view_probabilities),
            study_probability(mean_of),
            loaded.threshold_for(args.study_type),
            args.study_type,
        )
        print(
            json.dumps(
                {
                    "study": good_files,
                    "study_type": study.study_type,
                    "probability": round(study.probability, 6),
                    "threshold": study.threshold,
                    # No verdict for a study the scope head flags outside the model's training (say why instead),
                    # unless the user named the body part.
                    "verdict": None if (scope_reason or ambiguity) and not args.study_type else study.verdict,
                    "in_scope": scope_reason is None,
                    "verdict_against_scope_flag": bool(scope_reason and args.study_type and len(kept) == len(scopes)),
                    "left_out_of_mean": [good_files[index] for index in range(len(good_files)) if index not in kept],
                    "suggested_study_type": suggested,
                    # The fracture output (FracAtlas's label, a model that has it): the mean of the views,
                    # as for P(abnormal).
                    "fracture_probability": round(float(np.mean(view_fractures)), 6) if view_fractures else None,
                    "fracture_threshold": loaded.fracture_threshold,
                }
                | _scope_fields(scopes)
                | ({"scope_reason": scope_reason} if scope_reason else {})
                | ({"scope_ambiguity": ambiguity} if ambiguity else {})
            ),
            flush=True,
        )
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
