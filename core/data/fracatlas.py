"""Reader for a FracAtlas folder (CC BY 4.0) in the layout of ``../shared/fracatlas``.

A root holds ``labels.csv`` (one row per image), ``fractures_coco.json`` (COCO fracture
instances in the stored image's pixels) and ``images/``. Any folder in that layout works, so
checks elsewhere can point ``--root`` at their own copy. Paths in both files are relative to the
root; :func:`image_file` refuses any that escape it (``..``, absolute paths, symlinks out).

The label is *fracture*, not MURA's broader *abnormal*: hardware (``hardware == 1``) is abnormal
for MURA but not a fracture here, so reports keep it apart.

Credit (shown wherever these images are): Abedeen I, Rahman MA, Prottyasha FZ, Ahmed T,
Chowdhury TM, Shatabda S. FracAtlas: A Dataset for Fracture Classification, Localization and
Segmentation of Musculoskeletal Radiographs. Scientific Data 10, 521 (2023).
doi:10.1038/s41597-023-02432-4. CC BY 4.0; images resized.

Example:
    >>> root = resolve_root("../shared/fracatlas")  # doctest: +SKIP
    >>> images = read_images(root)  # doctest: +SKIP
    >>> outlines = read_outlines(root)  # doctest: +SKIP
    >>> mask = outlines.mask("images/IMG0000019.jpg")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import radius_neighbors_graph

__all__ = [
    "LABELS_FILE",
    "COCO_FILE",
    "REGIONS",
    "UPPER_LIMB_REGIONS",
    "CREDIT",
    "FracAtlasError",
    "resolve_root",
    "image_file",
    "read_images",
    "Outlines",
    "read_outlines",
    "DUPLICATE_RMS",
    "duplicate_groups",
]

LABELS_FILE = "labels.csv"
COCO_FILE = "fractures_coco.json"
REGIONS = ("hand", "shoulder", "hand+shoulder", "leg/hip")
UPPER_LIMB_REGIONS = ("hand", "shoulder", "hand+shoulder")
CREDIT = (
    "FracAtlas: Abedeen I, Rahman MA, Prottyasha FZ, Ahmed T, Chowdhury TM, Shatabda S. "
    "A Dataset for Fracture Classification, Localization and Segmentation of Musculoskeletal "
    "Radiographs. Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4. "
    "Licence CC BY 4.0; images resized (longest side 512 px)."
)

#: Two images are copies of one radiograph when their 64x64 greyscale thumbnails differ by less than
#: this root-mean-square (intensities in [0, 1]). On ../shared/fracatlas the nearest distinct pairs
#: are at least 0.0088 apart and the copies at most 0.0009, so any value between separates them.
DUPLICATE_RMS = 0.004
_THUMBNAIL = 64

_REQUIRED_COLUMNS = ("file", "region", "fractured", "hardware", "width", "height")
_INT_COLUMNS = ("fractured", "hardware", "width", "height")


class FracAtlasError(ValueError):
    """The folder or one of its files is missing, malformed or unsafe; the message is one sentence."""


def resolve_root(path: str | os.PathLike[str]) -> Path:
    """Validate a FracAtlas root (the folder holding labels.csv) and return it resolved."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FracAtlasError(f"The FracAtlas folder {root} does not exist or is not a folder.")
    if not (root / LABELS_FILE).is_file():
        raise FracAtlasError(f"{root} has no {LABELS_FILE}; point it at the FracAtlas folder itself.")
    return root.resolve()


def image_file(root: Path, relative: str) -> Path:
    """The file of an image named relative to ``root``; refuses names that leave the root."""
    if any(ord(character) < 32 or character == "\x7f" for character in relative):
        # A CR or LF would split the name's row in every CSV written from it (pandas quotes only LF).
        raise FracAtlasError(
            f"The FracAtlas folder names a file with a control character (a line break or an "
            f"escape) in it, {relative!r}; rename it."
        )
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise FracAtlasError(f"{relative!r} is not a path inside the FracAtlas folder.")
    path = (root / pure).resolve()
    if not path.is_relative_to(root.resolve()):
        raise FracAtlasError(f"{relative!r} points outside the FracAtlas folder.")
    return path


def read_images(root: Path) -> pd.DataFrame:
    """One row per image of ``labels.csv`` whose file is present, in file order.

    Columns: every column of labels.csv (``file`` relative to the root, ``region``, ``fractured``,
    ``hardware``, ``width``/``height`` as stored, ...) plus ``upper_limb`` as a bool.
    """
    labels_path = root / LABELS_FILE
    try:
        table = pd.read_csv(labels_path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise FracAtlasError(f"{LABELS_FILE} in {root} cannot be read as a CSV ({type(exc).__name__}).") from exc
    missing = [c for c in _REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise FracAtlasError(f"{LABELS_FILE} lacks the column(s) {', '.join(missing)}.")
    try:
        for column in _INT_COLUMNS:
            table[column] = pd.to_numeric(table[column], errors="raise").astype(int)
    except (ValueError, TypeError) as exc:
        raise FracAtlasError(f"{LABELS_FILE} has a non-numeric value in {', '.join(_INT_COLUMNS)}.") from exc
    unknown = sorted(set(table["region"].astype(str)) - set(REGIONS))
    if unknown:
        raise FracAtlasError(
            f"{LABELS_FILE} has unknown region(s) {', '.join(map(repr, unknown[:3]))}; expected {', '.join(REGIONS)}."
        )
    if not table["fractured"].isin((0, 1)).all() or not table["hardware"].isin((0, 1)).all():
        raise FracAtlasError(f"{LABELS_FILE}: fractured and hardware must be 0 or 1.")
    present = [image_file(root, f).is_file() for f in table["file"].astype(str)]
    table = table[present].reset_index(drop=True)
    table["upper_limb"] = table["region"].isin(UPPER_LIMB_REGIONS)
    return table


@dataclass(frozen=True)
class Outlines:
    """Expert fracture outlines per image, in the stored image's pixels.

    ``polygons[file]`` is a list of instances, each a list of (N, 2) float arrays (x, y);
    ``boxes[file]`` is a list of ``(x, y, w, h)``; ``sizes[file]`` is ``(width, height)``.
    """

    polygons: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)
    boxes: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def files(self) -> list[str]:
        """Images with at least one outlined fracture, sorted."""
        return sorted(f for f, instances in self.polygons.items() if instances)

    def mask(self, file: str) -> np.ndarray:
        """Boolean (height, width) union of the image's outlines; all False without any.

        Polygons are filled with Pillow's rasteriser (no library in the stack reads COCO polygons
        without pulling in pycocotools' C build; this is the same even-odd fill).
        """
        width, height = self.sizes[file]
        canvas = Image.new("1", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for instance in self.polygons.get(file, []):
            for ring in instance:
                if len(ring) >= 3:
                    draw.polygon([tuple(point) for point in ring.tolist()], fill=1, outline=1)
        return np.array(canvas, dtype=bool)


def read_outlines(root: Path) -> Outlines:
    """Parse ``fractures_coco.json``; every file name is checked like :func:`image_file`."""
    path = root / COCO_FILE
    if not path.is_file():
        raise FracAtlasError(f"{root} has no {COCO_FILE}, so it has no fracture outlines.")
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        images = {int(image["id"]): image for image in coco["images"]}
        annotations = coco["annotations"]
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError) as exc:
        raise FracAtlasError(
            f"{COCO_FILE} is not a COCO file with images and annotations ({type(exc).__name__})."
        ) from exc
    polygons: dict[str, list[list[np.ndarray]]] = {}
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    try:
        for image in images.values():
            name = str(image["file_name"])
            image_file(root, name)
            sizes[name] = (int(image["width"]), int(image["height"]))
            polygons.setdefault(name, [])
            boxes.setdefault(name, [])
        for annotation in annotations:
            name = str(images[int(annotation["image_id"])]["file_name"])
            rings = [np.asarray(ring, dtype=float).reshape(-1, 2) for ring in annotation.get("segmentation") or []]
            polygons[name].append(rings)
            x, y, w, h = (float(v) for v in annotation["bbox"])
            boxes[name].append((x, y, w, h))
    except (KeyError, TypeError, ValueError) as exc:
        raise FracAtlasError(f"{COCO_FILE} has a malformed image or annotation entry ({type(exc).__name__}).") from exc
    return Outlines(polygons, boxes, sizes)


def duplicate_groups(root: Path, files: list[str], *, rms: float = DUPLICATE_RMS) -> list[str]:
    """For each file, the first file (in the given order) of its group of copies; itself when unique.

    FracAtlas stores some radiographs twice under different names. Resampling or splitting by
    these groups keeps copies together, so a bootstrap does not count one radiograph as two
    independent cases and a sample set does not show the same film twice.
    """
    if not files:
        return []
    thumbnails = []
    for file in files:
        try:
            with Image.open(image_file(root, file)) as picture:
                small = picture.convert("L").resize((_THUMBNAIL, _THUMBNAIL), Image.Resampling.BILINEAR)
        except (OSError, ValueError) as exc:
            raise FracAtlasError(f"{file} cannot be read as an image ({type(exc).__name__}).") from exc
        thumbnails.append(np.asarray(small, dtype=np.float32).ravel() / 255.0)
    # Euclidean distance / 64 is the RMS over the 4,096 thumbnail pixels.
    near = radius_neighbors_graph(np.stack(thumbnails), radius=rms * _THUMBNAIL, mode="connectivity")
    _, component = connected_components(near, directed=False)
    first_of: dict[int, str] = {}
    return [first_of.setdefault(int(c), file) for c, file in zip(component, files, strict=True)]
