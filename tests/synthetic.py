"""Seeded synthetic radiograph-like PNGs for upload tests (no MURA pixel, nothing downloaded).

Different seeds move, tilt and texture a bright 'bone' band, so each seed gives the model a
visibly different image and, in practice, a different probability: the load test needs
uploads whose answers can be told apart.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["synthetic_radiograph", "png_bytes", "synthetic_radiograph_png"]


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
