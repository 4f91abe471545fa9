"""A miniature MURA v1.1 root made of synthetic images, for tests that must not need the real data.

Layout and CSVs follow the official release exactly; the pixels are generated here (a bright
bar on a dark field, with a blob on "abnormal" studies), so nothing of MURA is copied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["make_fake_mura"]


def _synthetic_radiograph(rng: np.random.Generator, abnormal: bool, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    image = rng.normal(30, 8, size=(h, w))
    image[:, w // 3 : 2 * w // 3] += 120  # the "bone"
    if abnormal:
        cy, cx = rng.integers(h // 4, 3 * h // 4), w // 2
        yy, xx = np.ogrid[:h, :w]
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) // 8) ** 2] += 90
    return np.clip(image, 0, 255).astype(np.uint8)


def make_fake_mura(
    root: Path, *, patients_per_type: int = 6, seed: int = 0, missing: int = 0, size: tuple[int, int] = (48, 40)
) -> Path:
    """Write ``root/MURA-v1.1`` with humerus and forearm studies in both splits; return that folder.

    ``missing`` images are listed in the CSVs but not written, as in a partial copy.
    """
    rng = np.random.default_rng(seed)
    base = root / "MURA-v1.1"
    patient_number = 1
    for split in ("train", "valid"):
        image_rows, study_rows = [], []
        for study_type in ("XR_HUMERUS", "XR_FOREARM"):
            for _ in range(patients_per_type):
                patient = f"patient{patient_number:05d}"
                patient_number += 1
                abnormal = bool(rng.integers(0, 2))
                polarity = "positive" if abnormal else "negative"
                study_rel = f"MURA-v1.1/{split}/{study_type}/{patient}/study1_{polarity}/"
                study_rows.append(f"{study_rel},{int(abnormal)}")
                for view in range(1, int(rng.integers(1, 4)) + 1):
                    rel = f"{study_rel}image{view}.png"
                    image_rows.append(rel)
                    target = base / rel.split("/", 1)[1]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(_synthetic_radiograph(rng, abnormal, size)).save(target)
        for rel in image_rows[:missing]:
            (base / rel.split("/", 1)[1]).unlink()
        (base / f"{split}_image_paths.csv").write_text("\n".join(image_rows) + "\n")
        (base / f"{split}_labeled_studies.csv").write_text("\n".join(study_rows) + "\n")
    return base
