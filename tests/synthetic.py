"""Seeded synthetic inputs for tests (no MURA pixel, nothing downloaded): radiograph-like PNGs for
upload tests, a small random network for the CAM tests, and a progress callback that holds a slow
CAM midway.

Different seeds move, tilt and texture a bright 'bone' band, so each seed gives the model a
visibly different image and, in practice, a different probability: the load test needs
uploads whose answers can be told apart.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.model.registry import create_model

__all__ = ["synthetic_radiograph", "png_bytes", "synthetic_radiograph_png", "calibrated_mobilenet", "HeldRun"]


def synthetic_radiograph(seed: int, size: int = 128) -> np.ndarray:
    """A (size, size) uint8 greyscale image: dark background, one tilted bright band, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    centre, tilt, width = rng.uniform(0.25, 0.75), rng.uniform(-0.4, 0.4), rng.uniform(0.06, 0.2)
    bone = np.exp(-(((x - centre - tilt * (y - 0.5)) / width) ** 2))
    image = 0.08 + 0.75 * bone * (0.5 + 0.5 * y) + rng.normal(0.0, 0.04, (size, size))
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_radiograph_png(seed: int, size: int = 128) -> bytes:
    """:func:`synthetic_radiograph` encoded as PNG, as a user would upload it."""
    return png_bytes(synthetic_radiograph(seed, size))


def calibrated_mobilenet(seed: int = 0, size: int = 64) -> nn.Module:
    """Seeded random MobileNetV2 whose batch-norm statistics come from random ``size`` px images.

    With torchvision's initial running statistics (mean 0, variance 1) a random network
    saturates and its output does not depend on the input, so every CAM would be flat.
    """
    torch.manual_seed(seed)
    model = create_model("mobilenet_v2")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(8, 3, size, size))
    return model.eval().requires_grad_(False)


class HeldRun:
    """A progress callback for a slow CAM: at its first midway report it sets :attr:`running`, waits
    until :attr:`released` is set (at most ``timeout_s``), then stops the run as the Stop button does,
    by raising :class:`HeldRun.Stopped`."""

    class Stopped(Exception):
        """The held run was stopped."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.running, self.released = threading.Event(), threading.Event()
        self.timeout_s = timeout_s

    def __call__(self, fraction: float) -> None:
        if 0.0 < fraction < 1.0:
            self.running.set()
            self.released.wait(timeout=self.timeout_s)
            raise HeldRun.Stopped
