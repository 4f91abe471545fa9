"""Heat maps drawn for people: resizing, colour overlays and thresholded regions.

Kept apart from :mod:`core.cam.explain` (which computes the maps) as pytorch_grad_cam keeps
``utils/image.py`` apart from its CAM classes: nothing here touches a model.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

__all__ = [
    "COLORMAPS",
    "DEFAULT_COLORMAP",
    "DEFAULT_OPACITY",
    "colormap_colours",
    "overlay",
    "resize_heatmap",
    "threshold_mask",
]

#: Colour maps that :func:`overlay` accepts (OpenCV's, lower-case).
COLORMAPS: tuple[str, ...] = tuple(
    sorted(name.removeprefix("COLORMAP_").lower() for name in dir(cv2) if name.startswith("COLORMAP_"))
)
#: How an overlay looks unless the user chooses otherwise (CLI, dashboard controls).
DEFAULT_COLORMAP = "jet"
DEFAULT_OPACITY = 0.45


def resize_heatmap(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """A [0, 1] heat map at another size: area-averaged when shrinking, bilinear when growing."""
    shrinking = height * width < heatmap.size
    resized = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


def colormap_colours(colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """The 256 RGB uint8 colours :func:`overlay` gives heat 0..1, for colour bars that match it exactly."""
    if colormap.lower() not in COLORMAPS:
        raise ValueError(f"Unknown colour map {colormap!r}; choose from: {', '.join(COLORMAPS)}.")
    levels = np.arange(256, dtype=np.uint8).reshape(256, 1)
    colours = cv2.applyColorMap(levels, getattr(cv2, f"COLORMAP_{colormap.upper()}"))
    return cv2.cvtColor(colours, cv2.COLOR_BGR2RGB).reshape(256, 3)


def overlay(
    pixels: np.ndarray, heatmap: np.ndarray, *, colormap: str = DEFAULT_COLORMAP, opacity: float = DEFAULT_OPACITY
) -> np.ndarray:
    """Blend a heat map over a greyscale radiograph: RGB uint8 (H, W, 3) at the original size.

    Hand-blended with cv2.addWeighted rather than pytorch_grad_cam's show_cam_on_image,
    which divides the blend by its maximum and so brightens dark radiographs by varying
    amounts. ``colormap`` is one of :data:`COLORMAPS`.
    """
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError("overlay expects a 2-D uint8 greyscale image")
    if heatmap.shape != pixels.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} differs from the image's {pixels.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], not {opacity}")
    if colormap.lower() not in COLORMAPS:
        raise ValueError(f"Unknown colour map {colormap!r}; choose from: {', '.join(COLORMAPS)}.")
    levels = np.round(np.clip(heatmap, 0.0, 1.0) * 255).astype(np.uint8)
    colours = cv2.applyColorMap(levels, getattr(cv2, f"COLORMAP_{colormap.upper()}"))
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    grey = cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(colours, opacity, grey, 1.0 - opacity, 0.0)


def threshold_mask(heatmap: np.ndarray, threshold: float) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Pixels with heat >= ``threshold`` and the boxes of their connected regions.

    Boxes are half-open pixel ranges ``(x0, y0, x1, y1)`` (x0 <= x < x1, like slicing),
    regions are 8-connected, and boxes come largest area first.
    """
    if heatmap.ndim != 2:
        raise ValueError("threshold_mask expects a 2-D heat map")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], not {threshold}")
    mask = heatmap >= threshold
    labels, _count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    boxes = [
        (int(cols.start), int(rows.start), int(cols.stop), int(rows.stop))
        for rows, cols in ndimage.find_objects(labels)
    ]
    boxes.sort(key=lambda box: (-(box[2] - box[0]) * (box[3] - box[1]), box))
    return mask, boxes
