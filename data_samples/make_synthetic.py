"""Draw the project's SYNTHETIC radiograph-like demo studies (no real patient, no MURA pixel).

    python data_samples/make_synthetic.py

writes ``data_samples/synthetic/<study>/view<N>.png`` and ``data_samples/synthetic/index.csv``.
MURA's licence forbids shipping its images, so the app's out-of-the-box samples are drawn
here with numpy: a limb of soft tissue around one long bone (humerus) or two (forearm), with
a cortex, a medullary canal and trabecular ends, and optionally a fracture line or a metal plate
with screws. Every image carries a burned-in "SYNTHETIC" marker and a PNG text chunk saying
what it is. The drawing is seeded, so rerunning the script reproduces the files byte for byte.
The shapes are deliberately crude: they are for demonstrating the app, not for judging the model.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin
from scipy import ndimage

__all__ = ["SYNTHETIC_DIR", "INDEX_FILE", "SyntheticStudy", "STUDIES", "draw_view", "main"]

SYNTHETIC_DIR = Path(__file__).resolve().parent / "synthetic"
INDEX_FILE = SYNTHETIC_DIR / "index.csv"
DESCRIPTION = (
    "SYNTHETIC radiograph-like image drawn by data_samples/make_synthetic.py "
    "(MURA Lens demo); not an X-ray of any person."
)
HEIGHT, WIDTH = 512, 384  # MURA valid/ images have a longest side of 512 px

Finding = Literal["none", "fracture", "plate"]


@dataclass(frozen=True)
class SyntheticStudy:
    """One demo study: its id (folder), body part, what is drawn, and per-view seeds/angles."""

    name: str
    title: str
    study_type: str
    finding: Finding
    view_angles: tuple[float, ...]
    seed: int

    @property
    def label(self) -> int:
        """1 (abnormal) when a finding is drawn, as MURA labels hardware and fractures."""
        return int(self.finding != "none")


STUDIES = (
    SyntheticStudy("humerus_normal", "Synthetic humerus, no finding", "XR_HUMERUS", "none", (-4.0, 9.0), 1),
    SyntheticStudy("humerus_fracture", "Synthetic humerus, shaft fracture", "XR_HUMERUS", "fracture", (3.0, -8.0), 2),
    SyntheticStudy("forearm_normal", "Synthetic forearm, no finding", "XR_FOREARM", "none", (5.0, -6.0), 3),
    SyntheticStudy("forearm_plate", "Synthetic forearm, metal plate and screws", "XR_FOREARM", "plate", (-7.0, 4.0), 4),
)


def _limb_coordinates(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row index, and signed distance from a gently curved vertical axis, for every pixel."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    bend = rng.uniform(-12, 12)
    axis = WIDTH / 2 + bend * np.sin(np.pi * rows / HEIGHT)
    return rows, cols - axis, axis


def _bone(
    across: np.ndarray, rows: np.ndarray, offset: float, half_width: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Intensity and mask of one long bone: bright cortex, darker canal, textured wide ends."""
    distance = np.abs(across - offset) / half_width
    inside = distance <= 1.0
    cortex = np.clip((distance - 0.55) / 0.45, 0.0, 1.0)  # 0 in the canal, 1 at the outer wall
    texture = ndimage.gaussian_filter(rng.normal(0, 1, rows.shape).astype(np.float32), 1.5)
    ends = np.clip(1.0 - np.minimum(rows, HEIGHT - rows) / 90.0, 0.0, 1.0)  # trabecular ends
    intensity = 120 + 85 * cortex**0.7 + ends * (18 * texture + 15) + 6 * texture
    return np.where(inside, intensity, 0.0), inside


def draw_view(study: SyntheticStudy, view_index: int) -> np.ndarray:
    """One uint8 (HEIGHT, WIDTH) view of ``study``; deterministic for (study, view)."""
    rng = np.random.default_rng(1000 * study.seed + view_index)
    rows, across, _axis = _limb_coordinates(rng)
    taper = 1.0 - 0.18 * rows / HEIGHT
    soft_half_width = (105 if study.study_type == "XR_HUMERUS" else 80) * taper
    soft = np.clip(1.0 - np.abs(across) / soft_half_width, 0.0, 1.0) ** 0.35
    image = 18 + 62 * soft

    if study.study_type == "XR_HUMERUS":
        half = 22 * taper + 26 * np.clip(1 - rows / 70, 0, 1) ** 2 + 16 * np.clip((rows - 440) / 72, 0, 1)
        bones = [_bone(across, rows, 0.0, half, rng)]
    else:
        spread = 26 if view_index == 0 else 9  # the lateral view overlaps radius and ulna
        half = 12 * taper + 9 * np.clip((rows - 430) / 82, 0, 1) + 7 * np.clip(1 - rows / 60, 0, 1)
        bones = [_bone(across, rows, -spread, half, rng), _bone(across, rows, spread, half * 0.85, rng)]
    for intensity, inside in bones:
        image = np.where(inside, np.maximum(image, intensity), image)
    bone_mask = np.any([inside for _, inside in bones], axis=0)

    if study.finding == "fracture":
        # A jagged oblique dark line across the shaft, the distal part shifted sideways.
        level = 0.55 * HEIGHT + 8 * np.sin(across / 6.0) + 0.35 * across
        gap = np.abs(rows - level) < 2.5
        image = np.where(gap & bone_mask, image * 0.45, image)
        image = np.where((rows > level + 2.5) & bone_mask, np.roll(image, 4, axis=1), image)
    elif study.finding == "plate":
        plate = (np.abs(across + (10 if view_index else 40)) < 7) & (np.abs(rows - 0.55 * HEIGHT) < 110)
        image = np.where(plate, 248.0, image)
        for screw_row in np.linspace(0.55 * HEIGHT - 90, 0.55 * HEIGHT + 90, 6):
            screw = (np.abs(rows - screw_row) < 3) & (np.abs(across + (10 if view_index else 40) - 18) < 26)
            image = np.where(screw, 252.0, image)

    image = ndimage.gaussian_filter(image, 1.0) + rng.normal(0, 3.0, image.shape)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels).rotate(
        study.view_angles[view_index], resample=Image.BILINEAR, fillcolor=int(np.percentile(pixels, 2))
    )
    _burn_in_markers(picture, view_index)
    return np.asarray(picture)


def _burn_in_markers(picture: Image.Image, view_index: int) -> None:
    """A side marker as radiographs have, and the word SYNTHETIC so no one mistakes the image."""
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=16)
    draw.text((12, 10), "L" if view_index % 2 == 0 else "R", fill=235, font=font)
    draw.text((12, HEIGHT - 26), "SYNTHETIC", fill=235, font=font)


def _png_metadata(study: SyntheticStudy, view_index: int) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", DESCRIPTION)
    info.add_text("Title", f"{study.title}, view {view_index + 1}")
    info.add_text("Software", "data_samples/make_synthetic.py")
    return info


def main() -> None:
    rows = []
    for study in STUDIES:
        folder = SYNTHETIC_DIR / study.name
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for view_index in range(len(study.view_angles)):
            name = f"view{view_index + 1}.png"
            Image.fromarray(draw_view(study, view_index)).save(
                folder / name, pnginfo=_png_metadata(study, view_index), optimize=True
            )
            files.append(name)
        rows.append(
            {
                "ref": f"synthetic/{study.name}",
                "title": study.title,
                "study_type": study.study_type,
                "label": study.label,
                "finding": study.finding,
                "files": ";".join(files),
            }
        )
    with INDEX_FILE.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} synthetic studies under {SYNTHETIC_DIR}")


if __name__ == "__main__":
    main()
