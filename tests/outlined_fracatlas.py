"""A tiny FracAtlas-layout root whose fractures are outlined, for localisation tests (no ../shared).

Each image is a dark field with a bright vertical "bone" and, on fractured images, a dark break
across the bone; the break is the expert outline. One leg/hip fracture is out of the model's scope.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["OUTLINED_ROWS", "make_outlined_fracatlas"]

#: (file, region, fractured, hardware)
OUTLINED_ROWS = (
    ("images/IMG0000001.jpg", "hand", 1, 0),
    ("images/IMG0000002.jpg", "shoulder", 1, 1),
    ("images/IMG0000003.jpg", "hand+shoulder", 1, 0),
    ("images/IMG0000004.jpg", "hand", 0, 0),
    ("images/IMG0000005.jpg", "leg/hip", 1, 0),
)
_HEADER = "file,image_id,region,upper_limb,fractured,fracture_count,hardware,width,height\n"


def make_outlined_fracatlas(root: Path, *, size: tuple[int, int] = (80, 64), seed: int = 0) -> Path:
    """Write the root (labels.csv, fractures_coco.json, images/) at ``root`` and return it."""
    rng = np.random.default_rng(seed)
    height, width = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines, images, annotations = [], [], []
    for index, (file, region, fractured, hardware) in enumerate(OUTLINED_ROWS, start=1):
        picture = rng.normal(30, 6, size=size)
        picture[:, width // 3 : 2 * width // 3] += 150
        top = height // 3 + 4 * index
        if fractured:
            picture[top : top + 5, width // 3 : 2 * width // 3] = 40
        if hardware:
            picture[5:15, 5:10] = 255
        Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(root / file, quality=95)
        upper = int(region != "leg/hip")
        lines.append(f"{file},{Path(file).name},{region},{upper},{fractured},{fractured},{hardware},{width},{height}\n")
        if fractured:
            images.append({"id": index, "file_name": file, "width": width, "height": height})
            x0, x1, y0, y1 = width // 3, 2 * width // 3, top, top + 5
            annotations.append(
                {
                    "id": index,
                    "image_id": index,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                }
            )
    (root / "labels.csv").write_text(_HEADER + "".join(lines))
    (root / "fractures_coco.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    return root
