"""Greyscale radiograph -> normalised model input, and the geometry to map results back.

Images are letterboxed (aspect ratio kept) onto a square canvas. The padding uses the median of
the image's own border pixels rather than black, so CAMs do not light up on an artificial edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.model.registry import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["Letterbox", "letterbox", "to_model_input", "border_fill_value"]


@dataclass(frozen=True)
class Letterbox:
    """Where the resized image sits inside the square canvas (pixels of the canvas)."""

    canvas: int
    top: int
    left: int
    height: int
    width: int
    original_height: int
    original_width: int

    def crop(self, canvas_map: np.ndarray) -> np.ndarray:
        """The part of a canvas-sized map that covers the image (padding dropped)."""
        return canvas_map[self.top : self.top + self.height, self.left : self.left + self.width]


def border_fill_value(pixels: np.ndarray) -> int:
    """Median of the outermost rows and columns: the image's own background level."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return int(np.median(border))


def letterbox(pixels: np.ndarray, size: int) -> tuple[torch.Tensor, Letterbox]:
    """Resize a uint8 (H, W) array so its longer side is ``size`` and pad it to size x size.

    Returns a uint8 tensor (1, size, size) and the placement. Antialiased bilinear resize
    matches what Pillow's resize does for downscaling, at tensor speed.
    """
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError("letterbox expects a 2-D uint8 greyscale array")
    h, w = pixels.shape
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    image = torch.tensor(pixels, dtype=torch.float32)[None, None]  # a copy: callers' arrays may be read-only
    resized = F.interpolate(image, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    canvas = torch.full((1, 1, size, size), float(border_fill_value(pixels)))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[:, :, top : top + new_h, left : left + new_w] = resized
    placement = Letterbox(size, top, left, new_h, new_w, h, w)
    return canvas[0].round().clamp(0, 255).to(torch.uint8), placement


def to_model_input(
    canvas: torch.Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 (..., 1, S, S) -> float (..., 3, S, S), ImageNet-normalised (grey copied to RGB)."""
    x = canvas.float().div(255.0)
    x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    mean_t = torch.tensor(mean, device=x.device).view(3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(3, 1, 1)
    return (x - mean_t) / std_t
