"""CAM explanations of the single-logit classifiers, over pytorch_grad_cam.

Every CAM method comes from pytorch_grad_cam; this module adds what a radiograph
dashboard needs around it: the letterbox round trip (maps are cropped to the image and
normalised there, so padding never wins the colour scale), the sign of a single-logit
target, thread safety on a model shared between sessions, progress, a cost count and a cancel
for the slow methods, and an :class:`Explanation` that names its settings and keeps the raw
CAM range that per-image normalisation discards (for an absolute colour scale). Drawing the
maps is :mod:`core.cam.overlay`'s job, judging them :mod:`core.cam.faithfulness`'s.

CAMs run on explain's own copies of each model (made on first use, refreshed when the
model's weights change), never on the model that prediction shares: pytorch_grad_cam
registers hooks on the network it is given, and AblationCAM even swaps one of its
layers, so a concurrent prediction on the same network would read a CAM's ablated layer
and a CAM would collect a prediction's activations. Each copy is serialised by a lock held
for the whole CAM computation, and the slow methods (minutes for ScoreCAM) have a copy and
lock of their own: a fast method never waits behind a slow one, whoever started it, and at
most one slow run per model takes the CPU at a time.

Example:
    >>> loaded = load_model()
    >>> result = explain(loaded, pixels, method="GradCAM++", layers=["stage 5 (96 ch, stride 16)"])
    >>> picture = core.cam.overlay.overlay(pixels, result.heatmap)
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args

import cv2
import numpy as np
import torch
from pytorch_grad_cam import (
    FEM,
    KPCA_CAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    ShapleyCAM,
    XGradCAM,
)
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.base_cam import BaseCAM
from torch import nn

from core.cam.overlay import resize_heatmap
from core.data.preprocess import Letterbox, letterbox, to_model_input
from core.model.checkpoint import LoadedModel
from core.model.prediction import predict_image_outputs
from core.model.registry import COMPLEMENTS, FRACTURE, resolve_layer

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "CamCancelled",
    "ClassProbability",
    "OutputLogit",
    "check_target",
    "output_column",
    "opposite_target",
    "Explanation",
    "MethodInfo",
    "Target",
    "explain",
    "explain_grid",
    "forward_seconds_per_image",
    "images_per_run",
    "shares_a_pass",
]

Target = Literal["abnormal", "normal", "fracture", "no fracture"]
#: Which gradients a method needs: none; at its target layers; at the input (FullGrad);
#: or the gradient's own graph (ShapleyCAM's Hessian-vector product).
GradientUse = Literal["none", "layer", "input", "second_order"]


@dataclass(frozen=True)
class MethodInfo:
    """How to run one pytorch_grad_cam method and what to tell the user about it."""

    cam_class: type[BaseCAM]
    gradients: GradientUse
    help: str
    slow: bool = False
    uses_layers: bool = True


DEFAULT_METHOD = "GradCAM"

#: Display name -> method. Left out on purpose: FinerCAM weighs the target against the most
#: similar *other* classes' logits; a single-logit model has none, so its default target is
#: zero and an explicit one makes it plain GradCAM. RandomCAM is a sanity baseline, not an
#: explanation; SegEigenCAM is built for segmentation; RefineCAM and SESS are meta-methods
#: over the methods listed here. "slow" means several seconds or more on a 2-core CPU at 320 px.
METHODS: dict[str, MethodInfo] = {
    "GradCAM": MethodInfo(
        GradCAM, "layer", "Channels weighted by the score's average gradient; the classic, fast default."
    ),
    "HiResCAM": MethodInfo(
        HiResCAM, "layer", "Gradient x activation at every location: shows exactly what the score used at this layer."
    ),
    "GradCAMElementWise": MethodInfo(
        GradCAMElementWise, "layer", "Like HiResCAM, keeping only the locations that raise the score."
    ),
    "GradCAM++": MethodInfo(
        GradCAMPlusPlus,
        "layer",
        "Weights positive gradients by higher-order terms; better when several regions matter.",
    ),
    "XGradCAM": MethodInfo(XGradCAM, "layer", "Gradients weighted by normalised activations (axiom-based Grad-CAM)."),
    "LayerCAM": MethodInfo(LayerCAM, "layer", "Positive gradient x activation per location; sharp on earlier layers."),
    "EigenCAM": MethodInfo(
        EigenCAM,
        "none",
        "First principal component of the activations: no backward pass, and the same map "
        "for both targets (it does not know the class).",
    ),
    "EigenGradCAM": MethodInfo(
        EigenGradCAM, "layer", "First principal component of gradient x activation: class-aware and smooth."
    ),
    "KPCA-CAM": MethodInfo(
        KPCA_CAM, "none", "Kernel PCA of the activations: like EigenCAM (class-agnostic), non-linear."
    ),
    "FEM": MethodInfo(
        FEM,
        "none",
        "Feature Explanation Method: channels weighted by how often they fire well above their "
        "mean; class-agnostic, no backward pass.",
    ),
    "ShapleyCAM": MethodInfo(
        ShapleyCAM,
        "second_order",
        "Gradient corrected by a Hessian-vector product (a Shapley-value view of Grad-CAM); "
        "a few times GradCAM's cost.",
    ),
    "ScoreCAM": MethodInfo(
        ScoreCAM,
        "none",
        "Masks the image with each channel and scores it: one forward pass per channel "
        "(minutes on a CPU for the last layer).",
        slow=True,
    ),
    "AblationCAM": MethodInfo(
        AblationCAM,
        "none",
        "Switches channels off and measures how much P(target) drops; one forward pass per ablated channel (slow).",
        slow=True,
    ),
    "FullGrad": MethodInfo(
        FullGrad,
        "input",
        "Input gradient plus the bias gradients of every layer; ignores the chosen layer.",
        slow=True,
        uses_layers=False,
    ),
}

# ScoreCAM and AblationCAM push one image per channel through the network. Small batches:
# on a 2-core CPU the time per image grows with the batch (cache misses), and the progress
# bar moves more often.
_SLOW_METHOD_BATCH = 4
_LOCK_POLL_S = 0.2  # how often a CAM waiting for its lock checks its cancel event
# AblationCAM ablates every channel of a layer up to this many, else this many channels
# chosen by pytorch_grad_cam's ratio_channels_to_ablate (half most, half least salient).
_MAX_ABLATED_CHANNELS = 256
# Passes of aug_smooth: BaseCAM's default tta_transforms, a horizontal flip x three brightness factors.
_AUG_PASSES = 6


class CamCancelled(Exception):
    """A CAM run stopped because its caller set the ``cancel`` event it passed to :func:`explain`."""


@dataclass(frozen=True, eq=False)
class Explanation:
    """A CAM mapped back onto the original radiograph, with the settings that made it.

    ``heatmap`` is float32 (H, W) in [0, 1] at the original image's resolution, normalised
    over the image (never the letterbox padding). ``probability`` is P(abnormal) for the
    whole image, whatever the target. ``layers`` are the cam_layers names used (empty for
    FullGrad, which uses every layer with a bias); ``model`` is the model's name.

    ``raw_map`` keeps what the per-image normalisation throws away: the CAM before
    pytorch_grad_cam's min-max scaling (its ReLU'd ``get_cam_image``: weighted activations,
    in the method's own units), averaged over the target layers, cropped to the image at the
    model's input scale. It lets maps share one absolute scale, where weak evidence looks
    weak. None for FullGrad, whose library output scales every layer before summing, so no
    raw value survives.
    """

    heatmap: np.ndarray
    probability: float
    method: str
    layers: tuple[str, ...]
    target: Target
    aug_smooth: bool = False
    eigen_smooth: bool = False
    model: str = ""
    raw_map: np.ndarray | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, tuple[str, ...], str, bool, bool]:
        """Every choice that shaped the map (method, layers, target, smoothing): a cache key."""
        return self.method, self.layers, self.target, self.aug_smooth, self.eigen_smooth

    @property
    def raw_peak(self) -> float | None:
        """The largest raw CAM value over the image (None without a raw map)."""
        return None if self.raw_map is None else float(self.raw_map.max())

    def absolute_heatmap(self, peak: float) -> np.ndarray:
        """The raw map on a shared [0, ``peak``] scale, at the image's resolution, in [0, 1].

        ``peak`` is the largest raw value among the maps shown together, so a map whose
        evidence is a tenth of the strongest one peaks at 0.1, not at 1.
        """
        if self.raw_map is None:
            raise ValueError(f"{self.method} has no raw scale: its maps are normalised per image only")
        height, width = self.heatmap.shape
        scaled = self.raw_map / peak if peak > 0 else np.zeros_like(self.raw_map)
        return resize_heatmap(scaled.astype(np.float32), height, width)

    def describe(self) -> dict[str, object]:
        """The settings as JSON-ready fields, for manifests and figure captions."""
        return {
            "model": self.model,
            "method": self.method,
            "layers": list(self.layers),
            "target": self.target,
            "aug_smooth": self.aug_smooth,
            "eigen_smooth": self.eigen_smooth,
            "probability": round(self.probability, 6),
            "raw_peak": self.raw_peak,
        }


class _CamNetwork:
    """One of explain's private copies of a shared model, and the lock that serialises CAMs on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._network: nn.Module | None = None
        self._fingerprint: tuple[tuple[int, int], ...] = ()

    def network_for(self, model: nn.Module) -> nn.Module:
        """The copy, remade if the model's weights changed since; call with the lock held."""
        fingerprint = _weights_fingerprint(model)
        if self._network is None or fingerprint != self._fingerprint:
            network = copy.deepcopy(model).eval()
            network.requires_grad_(False)
            self._network, self._fingerprint = network, fingerprint
        return self._network

    def discard(self) -> None:
        """Drop a copy a failed call may have left altered (hooks, AblationCAM's layer swap)."""
        self._network = None


# Per shared model: {slow: copy}, one copy for the fast methods and one for the slow ones.
_CAM_NETWORKS: weakref.WeakKeyDictionary[nn.Module, dict[bool, _CamNetwork]] = weakref.WeakKeyDictionary()
_CAM_NETWORKS_LOCK = threading.Lock()


def _cam_network(model: nn.Module, slow: bool) -> _CamNetwork:
    """The copy a method of this speed runs on: slow methods never hold the fast methods' lock."""
    with _CAM_NETWORKS_LOCK:
        return _CAM_NETWORKS.setdefault(model, {False: _CamNetwork(), True: _CamNetwork()})[slow]


def _weights_fingerprint(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """Changes whenever a weight is modified in place (version counter) or replaced (address)."""
    return tuple(
        (tensor.data_ptr(), tensor._version) for tensor in itertools.chain(model.parameters(), model.buffers())
    )


def _graph_starts_here(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """Forward hook: make the first target layer's output the leaf of the autograd graph.

    Layer-gradient methods only need d(score)/d(activation) at their target layers, so the
    backward pass stops there instead of running on to the input; the gradients are the
    same. Later target layers already depend on this leaf and are left alone.
    """
    if output.requires_grad:
        return None
    return output.detach().requires_grad_()


def _layer_channels(network: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> list[int]:
    """Channels of each target layer's output, from one inference pass."""
    channels: dict[int, int] = {}

    def record(index: int) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            channels.setdefault(index, output.shape[1])

        return hook

    handles = [module.register_forward_hook(record(index)) for index, module in enumerate(modules)]
    try:
        with torch.inference_mode():
            network(x)
    finally:
        for handle in handles:
            handle.remove()
    return [channels[index] for index in range(len(modules))]


class _ForwardProgress:
    """Forward hook on the whole network: reports progress and stops a cancelled run.

    ScoreCAM and AblationCAM spend their time in forward passes of channel batches, and
    pytorch_grad_cam reports them only to a tqdm bar on stderr and offers no way to stop;
    a hook that raises is the one place every method's passes go through. ``total_images``
    is 0 for methods whose passes are not counted (they only check ``cancel``).
    """

    def __init__(self, total_images: int, report: Callable[[float], None], cancel: threading.Event | None) -> None:
        self.total_images = total_images
        self.done_images = 0
        self.report = report
        self.cancel = cancel

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CamCancelled("the CAM run was cancelled")
        if self.total_images:
            self.done_images += args[0].shape[0]
            self.report(min(self.done_images / self.total_images, 1.0))


class _RawCams:
    """Records each layer's CAM before pytorch_grad_cam min-max scales it.

    The library scales every layer's ``get_cam_image`` to [0, 1] (``scale_cam_image``) and
    keeps no raw value; wrapping the CAM object's own ``get_cam_image`` (an instance
    attribute shadows the method) records it without re-implementing any method. The maps
    arrive one per target layer per forward pass, in target-layer order.
    """

    def __init__(self, cam: BaseCAM) -> None:
        self.maps: list[np.ndarray] = []
        self._cam = cam
        original = cam.get_cam_image

        def recording(*args: object, **kwargs: object) -> np.ndarray:
            result = original(*args, **kwargs)
            self.maps.append(np.maximum(np.asarray(result, dtype=np.float32)[0], 0.0))
            return result

        cam.get_cam_image = recording

    def release(self) -> None:
        """Unwrap ``get_cam_image`` (the wrapper refers to the CAM object, a reference cycle)."""
        self._cam.__dict__.pop("get_cam_image", None)

    def canvas(
        self, size: int, layers: Sequence[int], passes: Sequence[Callable[[np.ndarray], np.ndarray]]
    ) -> np.ndarray | None:
        """The (size, size) raw map: chosen layers averaged, each pass undone, passes averaged.

        Resized as the library resizes its scaled maps (cv2.resize, bilinear); ``passes`` undo
        each forward pass's augmentation (identity without aug_smooth). None when nothing was
        recorded (FullGrad computes its maps without ``get_cam_image``).
        """
        if not self.maps:
            return None
        per_pass = len(self.maps) // len(passes)
        canvases = [
            undo(np.mean([cv2.resize(self.maps[start + i], (size, size)) for i in layers], axis=0))
            for undo, start in zip(passes, range(0, len(self.maps), per_pass), strict=True)
        ]
        return np.mean(canvases, axis=0).astype(np.float32)


class _Deaugment(Protocol):
    """One of pytorch_grad_cam's test-time augmentations (ttach transforms): maps a mask back."""

    def deaugment_mask(self, mask: torch.Tensor) -> torch.Tensor: ...


def _undo_augmentation(transform: _Deaugment) -> Callable[[np.ndarray], np.ndarray]:
    """What pytorch_grad_cam's forward_augmentation_smoothing does to each pass's map, for a raw map."""

    def undo(canvas: np.ndarray) -> np.ndarray:
        return transform.deaugment_mask(torch.from_numpy(canvas[None, None])).numpy()[0, 0]

    return undo


class OutputLogit:
    """The signed logit of one output, as pytorch_grad_cam targets return it (a 1-element row).

    For a single-logit model this is exactly BinaryClassifierOutputTarget(1) ("abnormal") or (0)
    ("normal", minus the logit); that class reads the whole row, so a two-output model (abnormal,
    fracture) needs the column picked: "fracture" explains output 1, "no fracture" minus it.
    """

    def __init__(self, target: Target) -> None:
        self.column = output_column(target)
        self.sign = -1.0 if target in COMPLEMENTS else 1.0

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        """sign * the target's logit, shaped (1,) per row as the library's binary target."""
        return self.sign * model_output[..., self.column : self.column + 1]


def output_column(target: Target) -> int:
    """Which output column a target explains: 1 for "fracture" (or minus it), else 0 (abnormal, or minus it)."""
    return 1 if COMPLEMENTS.get(target, target) == FRACTURE else 0


def opposite_target(target: Target) -> Target:
    """The class a target's complement explains: "normal" for "abnormal", "fracture" for "no fracture"."""
    opposites: dict[str, Target] = {"abnormal": "normal", "normal": "abnormal", "fracture": "no fracture"}
    return opposites.get(target, "fracture")


def check_target(loaded: LoadedModel, target: str) -> None:
    """Raise ValueError unless ``loaded`` has the output ``target`` explains."""
    allowed = tuple(t for t in get_args(Target) if COMPLEMENTS.get(t, t) in loaded.outputs)
    if target not in allowed:
        raise ValueError(
            f"target must be one of {', '.join(map(repr, allowed))} for model {loaded.name!r}, not {target!r}"
        )


class ClassProbability:
    """Score = P(target class) = sigmoid(+-logit): positive, in [0, 1].

    Used where pytorch_grad_cam divides by or compares raw scores (AblationCAM's relative
    drop, ROAD): a single logit is negative whenever the model leans the other way, which
    would flip AblationCAM's channel weights.
    """

    def __init__(self, target: Target) -> None:
        self.logit_target = OutputLogit(target)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        """sigmoid(+-logit) of each output row."""
        return torch.sigmoid(self.logit_target(model_output))


@contextmanager
def _cam_pass(
    loaded: LoadedModel, pixels: np.ndarray, *, slow: bool, cancel: threading.Event | None = None
) -> Iterator[tuple[nn.Module, torch.Tensor, Letterbox]]:
    """The private network for a CAM run (under its lock, gradients on) and the prepared input.

    A caller inside torch.inference_mode (e.g. a prediction page) would otherwise hand the CAM
    inference tensors, which cannot take part in a backward pass. A run that fails discards the
    copy, since a hook or grad state may be left half set. A run cancelled while it waits for the
    lock stops waiting at once (a queued slow run whose user left must not hold a thread and its
    images until the run ahead of it ends).
    """
    cam_network = _cam_network(loaded.model, slow)
    with torch.inference_mode(False):
        canvas, placement = letterbox(pixels, loaded.input_size)
        model_input = to_model_input(canvas, loaded.config.mean, loaded.config.std).unsqueeze(0)
        while not cam_network.lock.acquire(timeout=_LOCK_POLL_S):
            if cancel is not None and cancel.is_set():
                raise CamCancelled("the CAM run was cancelled")
        try:
            with torch.enable_grad():
                network = cam_network.network_for(loaded.model)
                try:
                    yield network, model_input.to(next(network.parameters()).device), placement
                except BaseException:
                    cam_network.discard()
                    raise
        finally:
            cam_network.lock.release()


def explain(
    loaded: LoadedModel,
    pixels: np.ndarray,
    *,
    method: str = DEFAULT_METHOD,
    layers: Sequence[str] | str | None = None,
    target: Target = "abnormal",
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    probability: float | None = None,
) -> Explanation:
    """Explain one greyscale radiograph (uint8 (H, W)) with a CAM method.

    Args:
        method: a key of :data:`METHODS`.
        layers: names from ``loaded.cam_layers`` (default: its first, the last stage);
            several layers are averaged by pytorch_grad_cam.
        target: "abnormal" explains the logit, "normal" explains minus the logit
            (pytorch_grad_cam's BinaryClassifierOutputTarget with category 1 or 0), "fracture" a
            fracture-aware model's second output (:class:`OutputLogit`). Without ``layers``, the
            model's default layer for that output.
        aug_smooth: average over flips and brightness changes (6 passes).
        eigen_smooth: keep the first principal component of the weighted activations.
        progress: called with a fraction in [0, 1]; ScoreCAM and AblationCAM report per
            batch of channels, the others at start and end. It may raise to cancel.
        cancel: set it (from any thread) to stop the run after the forward pass in flight;
            give each run its own event, so one caller's cancel never stops another's run.
        probability: the target output's probability of this image when the caller already has it
            (:func:`model_probability`'s number, e.g. from a cached prediction): it saves the
            prediction's passes; None computes it.

    Raises:
        ValueError: unknown method, layer or target, or pixels that are not 2-D uint8.
        RuntimeError: the method failed on this model (an IndexError inside pytorch_grad_cam).
        CamCancelled: ``cancel`` was set before the run finished.
    """
    info = _method_info(method)
    check_target(loaded, target)
    layer_names = _layer_names(loaded, layers, target)
    report = progress or (lambda _fraction: None)
    report(0.0)
    with _cam_pass(loaded, pixels, slow=info.slow, cancel=cancel) as (network, model_input, placement):
        if cancel is not None and cancel.is_set():  # cancelled as the lock came free
            raise CamCancelled("the CAM run was cancelled")
        canvas_map, raw_canvas = _run_cam(
            network,
            method,
            info,
            [path for name in layer_names for path in loaded.layer_paths(name)],
            model_input,
            target,
            aug_smooth,
            eigen_smooth,
            report,
            cancel,
        )
    heatmap = _image_heatmap(canvas_map, placement)
    report(1.0)
    return Explanation(
        heatmap=heatmap,
        probability=model_probability(loaded, pixels, target) if probability is None else probability,
        method=method,
        layers=layer_names if info.uses_layers else (),
        target=target,
        aug_smooth=aug_smooth,
        eigen_smooth=eigen_smooth,
        model=loaded.name,
        raw_map=None if raw_canvas is None else placement.crop(raw_canvas),
    )


def model_probability(loaded: LoadedModel, pixels: np.ndarray, target: Target = "abnormal") -> float:
    """The probability of the target's output (P(abnormal) for "abnormal" and "normal", P(fracture) for
    "fracture") as core.predict computes it everywhere (letterbox, the card's flip TTA):
    one image, one probability, whichever page, figure or grid shows it. The CAM's own forward pass
    gives the unmirrored image's alone: 0.993 on the downloaded figure where Explain showed 0.988."""
    return float(predict_image_outputs(loaded, [pixels])[0, output_column(target)])


def shares_a_pass(method: str) -> bool:
    """Whether :func:`explain_grid` computes ``method`` from the pass it shares with the others.

    Fast methods that read only the target layers' activations, and at most their gradients, can
    share one forward and one backward pass; the slow ones, FullGrad (input gradients) and
    ShapleyCAM (second-order gradients) need passes of their own.
    """
    info = _method_info(method)
    return not info.slow and info.gradients in ("none", "layer")


def explain_grid(
    loaded: LoadedModel,
    pixels: np.ndarray,
    *,
    methods: Sequence[str],
    layers: Sequence[str],
    target: Target = "abnormal",
) -> dict[tuple[str, str], Explanation]:
    """Every method at every single layer: ``explain(method=m, layers=[l])`` for each pair, cheaper.

    pytorch_grad_cam runs a forward and a backward pass per CAM object, so a sweep of ten fast
    methods over four layers would cost forty; here one CAM object per method hooks every
    requested layer, one pass fills them all, and each object's own ``compute_cam_per_layer``
    and ``aggregate_multi_layers`` turn the recorded activations and gradients into the map of
    each layer choice (an ensemble's member layers averaged, as :func:`explain` does). Methods
    that cannot share the pass (:func:`shares_a_pass`) run through :func:`explain`. A method that
    ignores layers (FullGrad) appears once, under the layer name "".
    """
    for method in methods:
        _method_info(method)
    check_target(loaded, target)
    layer_names = _layer_names(loaded, layers, target)
    results: dict[tuple[str, str], Explanation] = {}
    shared = [m for m in dict.fromkeys(methods) if shares_a_pass(m)]
    for method in dict.fromkeys(methods):
        if method in shared:
            continue
        if METHODS[method].uses_layers:
            for name in layer_names:
                results[(method, name)] = explain(loaded, pixels, method=method, layers=[name], target=target)
        else:
            results[(method, "")] = explain(loaded, pixels, method=method, target=target)
    if not shared:
        return results
    with _cam_pass(loaded, pixels, slow=False) as (network, model_input, placement):  # fast methods only
        canvas_maps = _shared_pass(network, loaded, shared, layer_names, model_input, target)
    probability = model_probability(loaded, pixels, target)
    for (method, name), (canvas_map, raw_canvas) in canvas_maps.items():
        results[(method, name)] = Explanation(
            heatmap=_image_heatmap(canvas_map, placement),
            probability=probability,
            method=method,
            layers=(name,),
            target=target,
            model=loaded.name,
            raw_map=None if raw_canvas is None else placement.crop(raw_canvas),
        )
    return results


def _shared_pass(
    network: nn.Module,
    loaded: LoadedModel,
    methods: list[str],
    layer_names: tuple[str, ...],
    model_input: torch.Tensor,
    target: Target,
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray | None]]:
    """Canvas-sized (scaled, raw) maps of each (method, layer name) from one forward and one backward pass."""
    module_order = {path: index for index, (path, _module) in enumerate(network.named_modules())}
    paths = sorted({p for name in layer_names for p in loaded.layer_paths(name)}, key=module_order.__getitem__)
    modules = [resolve_layer(network, path) for path in paths]
    targets = [OutputLogit(target)]
    backward = any(METHODS[m].gradients != "none" for m in methods)
    handles = [m.register_forward_hook(_graph_starts_here, prepend=True) for m in modules] if backward else []
    cams: dict[str, BaseCAM] = {}
    raws: dict[str, _RawCams] = {}
    try:
        for method in methods:
            cams[method] = METHODS[method].cam_class(model=network, target_layers=modules)
            raws[method] = _RawCams(cams[method])
        # What BaseCAM.forward does, once for every CAM object: each one's hooks record the
        # activations of this forward pass and the gradients of this backward pass.
        output = network(model_input)
        if backward:
            network.zero_grad()
            torch.stack([t(o) for t, o in zip(targets, output, strict=True)]).sum().backward()
        maps: dict[tuple[str, str], tuple[np.ndarray, np.ndarray | None]] = {}
        for method, cam in cams.items():
            try:
                per_layer = cam.compute_cam_per_layer(model_input, targets, False)
            except IndexError as exc:
                raise RuntimeError(f"{method} failed on this model: {exc}") from exc
            for name in layer_names:
                chosen = [paths.index(p) for p in loaded.layer_paths(name)]
                raw = raws[method].canvas(model_input.shape[-1], chosen, [lambda canvas: canvas])
                maps[(method, name)] = (cam.aggregate_multi_layers([per_layer[i] for i in chosen])[0], raw)
        return maps
    finally:
        for method, cam in cams.items():
            cam.activations_and_grads.release()
            if method in raws:
                raws[method].release()
        for handle in handles:
            handle.remove()


def _method_info(method: str) -> MethodInfo:
    try:
        return METHODS[method]
    except KeyError:
        raise ValueError(f"Unknown CAM method {method!r}; choose from: {', '.join(METHODS)}.") from None


def _layer_names(
    loaded: LoadedModel, layers: Sequence[str] | str | None, target: Target = "abnormal"
) -> tuple[str, ...]:
    available = loaded.cam_layers
    if not available:
        raise ValueError(f"Model {loaded.name!r} names no CAM layers.")
    if layers is None:
        return (loaded.config.cam_layer_for(target),)
    names = tuple(dict.fromkeys([layers] if isinstance(layers, str) else layers))
    if not names:
        raise ValueError("Choose at least one CAM layer.")
    unknown = [name for name in names if not loaded.is_layer(name)]
    if unknown:
        raise ValueError(
            f"Unknown CAM layer(s) {', '.join(map(repr, unknown))} for model {loaded.name!r}; "
            f"choose from: {', '.join(map(repr, available))}, or a convolution's module path."
        )
    return names


def _run_cam(
    network: nn.Module,
    method: str,
    info: MethodInfo,
    layer_paths: list[str],
    model_input: torch.Tensor,
    target: Target,
    aug_smooth: bool,
    eigen_smooth: bool,
    report: Callable[[float], None],
    cancel: threading.Event | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The canvas-sized (S, S) map and its raw counterpart (see :class:`Explanation`)."""
    if info.gradients == "second_order" and len(layer_paths) > 1:
        # ShapleyCAM's Hessian-vector product frees the graph after the first target layer
        # (pytorch_grad_cam passes retain_graph=False), so several layers (the ones a user
        # chose, or an ensemble's one per member) run one at a time. The library combines
        # layers as the mean of their [0, 1]-scaled maps; each single-layer map is already
        # scaled, and _image_heatmap rescales the result, so the mean gives the library's map.
        runs = [
            _run_cam(network, method, info, [path], model_input, target, aug_smooth, eigen_smooth, report, cancel)
            for path in layer_paths
        ]
        raws = [raw for _, raw in runs if raw is not None]
        return (
            np.mean([canvas for canvas, _ in runs], axis=0),
            np.mean(raws, axis=0) if len(raws) == len(runs) else None,
        )
    # pytorch_grad_cam pairs the i-th target layer with the i-th activation it recorded,
    # and records them in execution order: list the layers in that order (AblationCAM
    # swaps out the layer it is given). Module order is execution order in these networks.
    module_order = {path: index for index, (path, _module) in enumerate(network.named_modules())}
    layer_paths = sorted(layer_paths, key=module_order.__getitem__)
    modules = [resolve_layer(network, path) for path in layer_paths] if info.uses_layers else []
    targets: list[Callable[[torch.Tensor], torch.Tensor]] = [OutputLogit(target)]
    options: dict[str, object] = {}
    images_per_pass = 0  # images one unaugmented CAM pushes through the network, when counted
    if info.cam_class in (ScoreCAM, AblationCAM):
        channels = _layer_channels(network, modules, model_input)
        images_per_pass = _images_per_pass(info, channels)
    if info.cam_class is AblationCAM:
        targets = [ClassProbability(target)]
        # A fresh AblationLayer: the library's default argument is one instance shared by all.
        options = {
            "ablation_layer": AblationLayer(),
            "batch_size": _SLOW_METHOD_BATCH,
            "ratio_channels_to_ablate": _ablation_ratio(channels),
        }
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        if info.gradients == "layer":
            handles += [m.register_forward_hook(_graph_starts_here, prepend=True) for m in modules]
        elif info.gradients == "second_order":
            # ShapleyCAM differentiates the gradient itself; with frozen weights the gradient
            # of a layer followed only by linear operations (the last stage) has no graph.
            network.requires_grad_(True)
        with info.cam_class(model=network, target_layers=modules, **options) as cam:
            raw = _RawCams(cam)
            if info.cam_class is ScoreCAM:
                cam.batch_size = _SLOW_METHOD_BATCH
            passes = list(cam.tta_transforms) if aug_smooth else []
            if images_per_pass or cancel is not None:
                handles.append(
                    network.register_forward_hook(
                        _ForwardProgress(max(1, len(passes)) * images_per_pass, report, cancel)
                    )
                )
            try:
                maps = cam(input_tensor=model_input, targets=targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
            except IndexError as exc:
                # BaseCAM.__exit__ swallows IndexError (it only prints it): surface it.
                raise RuntimeError(f"{method} failed on this model: {exc}") from exc
            finally:
                raw.release()
            raw_canvas = raw.canvas(
                model_input.shape[-1],
                range(len(modules)),
                [_undo_augmentation(t) for t in passes] or [lambda canvas: canvas],
            )
    finally:
        for handle in handles:
            handle.remove()
        if info.gradients == "second_order":
            network.requires_grad_(False)
    return maps[0], raw_canvas


def _ablation_ratio(channels: Sequence[int]) -> float:
    """pytorch_grad_cam's ratio_channels_to_ablate that ablates at most _MAX_ABLATED_CHANNELS per layer."""
    widest = max(channels)
    return 1.0 if widest <= _MAX_ABLATED_CHANNELS else _MAX_ABLATED_CHANNELS / (2 * widest)


def _images_per_pass(info: MethodInfo, channels: Sequence[int]) -> int:
    """Images one unaugmented ScoreCAM or AblationCAM run pushes through the network (0 otherwise)."""
    if info.cam_class is ScoreCAM:
        return 1 + sum(channels)  # one masked copy per channel, after the plain pass
    if info.cam_class is AblationCAM:
        # pytorch_grad_cam ablates every channel at ratio 1, else the int(ratio * channels)
        # most and as many least salient ones; each layer also gets one unablated pass.
        ratio = _ablation_ratio(channels)
        return 1 + sum(1 + (c if ratio == 1.0 else 2 * int(c * ratio)) for c in channels)
    return 0


def images_per_run(
    loaded: LoadedModel, method: str, layers: Sequence[str] | str | None = None, *, aug_smooth: bool = False
) -> int | None:
    """Images :func:`explain` pushes through the network for ScoreCAM or AblationCAM (None for others).

    Their cost is these forward passes, so this times :func:`forward_seconds_per_image` is a
    run's duration, known before it starts. Counting channels takes one inference pass on
    explain's fast copy (never the slow one, which a running slow method holds for minutes).
    """
    info = _method_info(method)
    if info.cam_class not in (ScoreCAM, AblationCAM):
        return None
    paths = [path for name in _layer_names(loaded, layers) for path in loaded.layer_paths(name)]
    blank = np.zeros((loaded.input_size, loaded.input_size), dtype=np.uint8)
    with _cam_pass(loaded, blank, slow=False) as (network, model_input, _placement):
        channels = _layer_channels(network, [resolve_layer(network, path) for path in paths], model_input)
    return _AUG_PASSES * _images_per_pass(info, channels) if aug_smooth else _images_per_pass(info, channels)


def forward_seconds_per_image(loaded: LoadedModel, repeats: int = 3) -> float:
    """Measured seconds per image of a forward pass in the slow methods' batches, on this machine.

    The best of ``repeats`` timed batches of _SLOW_METHOD_BATCH blank canvases (the first
    warms caches), on explain's fast copy under its lock.
    """
    blank = np.zeros((loaded.input_size, loaded.input_size), dtype=np.uint8)
    with _cam_pass(loaded, blank, slow=False) as (network, model_input, _placement), torch.inference_mode():
        batch = model_input.expand(_SLOW_METHOD_BATCH, -1, -1, -1)
        timings = []
        for _ in range(max(1, repeats)):
            started = time.perf_counter()
            network(batch)
            timings.append(time.perf_counter() - started)
    return min(timings) / _SLOW_METHOD_BATCH


def _image_heatmap(canvas_map: np.ndarray, placement: Letterbox) -> np.ndarray:
    """Crop a canvas map to the image, normalise it there, resize it to the original.

    pytorch_grad_cam normalises over the whole canvas, where the letterbox padding (and the
    convolutions' zero padding at its edges) can hold the maximum; min-max scaling is
    affine, so rescaling the crop equals normalising the raw CAM over the image only.
    """
    crop = placement.crop(canvas_map)
    low, high = float(crop.min()), float(crop.max())
    if high > low:
        normalised = ((crop - low) / (high - low)).astype(np.float32)
    else:
        normalised = np.zeros_like(crop, dtype=np.float32)
    return resize_heatmap(normalised, placement.original_height, placement.original_width)
