"""Training images: decoded and letterboxed once, augmented on the fly as the MURA paper did.

Augmentation is drawn in the training process from one seeded generator and applied wherever
the DataLoader runs it, so worker count never changes what is trained.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from core.data.preprocess import border_fill_value, letterbox

__all__ = ["Augmentation", "AugmentedCanvases", "augment", "draw_augmentation", "load_canvases", "warp"]


def load_canvases(files: list[Path], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and letterbox every image once; keep uint8 canvases and their fill values."""
    canvases = torch.empty((len(files), 1, size, size), dtype=torch.uint8)
    fills = torch.empty(len(files), dtype=torch.float32)
    for i, path in enumerate(tqdm(files, desc="decode", unit="img", leave=False)):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
        canvases[i], _ = letterbox(pixels, size)
        fills[i] = border_fill_value(pixels)
    return canvases, fills


@dataclass(frozen=True)
class Augmentation:
    """One image's draw of the paper's augmentation (lateral flip, rotation) plus mild
    scale/shift/brightness/contrast jitter."""

    flip: bool
    angle: float
    translate: tuple[float, float]
    scale: float
    brightness: float
    contrast: float


def draw_augmentation(rng: random.Random, rotation: float, size: int) -> Augmentation:
    """Draw in the training process, in batch order, from one seeded generator: the images then
    get the same augmentation whichever process or worker applies it."""
    flip = rng.random() < 0.5
    angle = rng.uniform(-rotation, rotation)
    translate = (rng.uniform(-0.06, 0.06) * size, rng.uniform(-0.06, 0.06) * size)
    scale = rng.uniform(0.9, 1.15)
    return Augmentation(flip, angle, translate, scale, rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2))


def warp(canvas: torch.Tensor, fill: float, draw: Augmentation) -> torch.Tensor:
    """The geometric part of one draw (flip, rotation, shift, scale): what an outline mask of the
    image must follow too. Rotated-in corners take ``fill``."""
    if draw.flip:
        canvas = TF.horizontal_flip(canvas)
    return TF.affine(
        canvas,
        angle=draw.angle,
        translate=list(draw.translate),
        scale=draw.scale,
        shear=[0.0, 0.0],
        interpolation=TF.InterpolationMode.BILINEAR,
        fill=[fill],
    )


def augment(canvas: torch.Tensor, fill: float, draw: Augmentation) -> torch.Tensor:
    """Apply one draw to a uint8 canvas; the rotated-in corners take the letterbox fill value."""
    canvas = TF.adjust_brightness(warp(canvas, fill, draw), draw.brightness)
    return TF.adjust_contrast(canvas, draw.contrast)


class AugmentedCanvases(torch.utils.data.Dataset):
    """Training canvases augmented on the fly; a key is a (row, Augmentation) pair."""

    def __init__(self, canvases: torch.Tensor, fills: torch.Tensor) -> None:
        self.canvases, self.fills = canvases, fills

    def __len__(self) -> int:
        return len(self.canvases)

    def __getitem__(self, key: tuple[int, Augmentation]) -> torch.Tensor:
        row, draw = key
        return augment(self.canvases[row], float(self.fills[row]), draw)
