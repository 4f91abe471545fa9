"""A miniature FracAtlas root made of synthetic images, for tests that must not need ../shared.

Same layout as ../shared/fracatlas (labels.csv, fractures_coco.json, images/): every region, both
labels, hardware, and one radiograph stored twice (as FracAtlas does) so duplicate handling is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["FAKE_ROWS", "make_fake_fracatlas"]

#: (region, fractured, hardware) per image; the last two rows are one radiograph saved twice.
FAKE_ROWS = (
    [("hand", 1, 0)] * 5
    + [("hand", 0, 0)] * 5
    + [("hand", 0, 1)] * 2
    + [("hand", 1, 1)]
    + [("shoulder", 1, 0)] * 2
    + [("shoulder", 0, 0)] * 2
    + [("hand+shoulder", 1, 0), ("hand+shoulder", 0, 0)]
    + [("leg/hip", 1, 0), ("leg/hip", 0, 0), ("leg/hip", 0, 0)]
    + [("hand", 0, 0)] * 2
)
_HEADER = (
    "file,image_id,region,upper_limb,fractured,fracture_count,hardware,hand,shoulder,leg,hip,mixed,"
    "multiscan,frontal,lateral,oblique,width,height,original_width,original_height,fracture_split\n"
)


def _picture(rng: np.random.Generator, fractured: int, hardware: int, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    image = rng.normal(40, 10, size=(height, width))
    image[:, width // 3 : 2 * width // 3] += 110  # the "bone"
    if fractured:
        image[height // 2 - 2 : height // 2 + 2, width // 3 : 2 * width // 3] = 20  # a dark break
    if hardware:
        image[height // 4 : 3 * height // 4, width // 2 - 2 : width // 2 + 2] = 255  # a bright plate
    return np.clip(image, 0, 255).astype(np.uint8)


def make_fake_fracatlas(root: Path, *, seed: int = 0, size: tuple[int, int] = (64, 48)) -> Path:
    """Write a FracAtlas-layout root with FAKE_ROWS at ``root``; return it. Fractures get a box outline."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    height, width = size
    lines, coco_images, annotations = [], [], []
    pixels = None
    for index, (region, fractured, hardware) in enumerate(FAKE_ROWS, start=1):
        name = f"IMG{index:07d}.jpg"
        if pixels is None or index != len(FAKE_ROWS):  # the last image repeats the one before it
            pixels = _picture(rng, fractured, hardware, size)
        Image.fromarray(pixels).save(root / "images" / name, quality=95)
        flags = {"hand": "1,0,0,0", "shoulder": "0,1,0,0", "hand+shoulder": "1,1,0,0", "leg/hip": "0,0,1,0"}[region]
        upper = int(region != "leg/hip")
        split = "train" if fractured else ""
        lines.append(
            f"images/{name},{name},{region},{upper},{fractured},{fractured},{hardware},{flags},0,0,"
            f"1,0,0,{width},{height},{width * 4},{height * 4},{split}\n"
        )
        if fractured:
            coco_images.append({"id": index, "file_name": f"images/{name}", "width": width, "height": height})
            x, y, w, h = width // 3, height // 2 - 4, width // 3, 8
            annotations.append(
                {
                    "id": index,
                    "image_id": index,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
    (root / "labels.csv").write_text(_HEADER + "".join(lines))
    (root / "fractures_coco.json").write_text(
        json.dumps({"images": coco_images, "annotations": annotations, "categories": [{"id": 1, "name": "fractured"}]})
    )
    return root
