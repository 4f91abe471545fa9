"""Write data_samples/fracatlas/: a small set of real FracAtlas radiographs the app shows without MURA.

    python data_samples/make_fracatlas_samples.py [--source ../shared/fracatlas] [--out data_samples/fracatlas]

The output is itself a FracAtlas root (core.data.fracatlas reads it unchanged): ``labels.csv`` (the
source's columns, only the chosen rows), ``fractures_coco.json`` (the COCO subset of those images,
same coordinates), ``images/`` (the files copied as they are, already resized to 512 px) and a
README with the credit. FracAtlas is CC BY 4.0, so these images may ship with attribution.

The rule is fixed and blind to any model: leave out every image that has a copy under another
name (core.data.fracatlas.duplicate_groups), then draw, with one seeded generator, the number of images
CATEGORIES asks for from each category, in file order. Rerunning on the same source gives the
same set; a source missing some images gives another draw, never an error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import fracatlas

__all__ = ["CATEGORIES", "SEED", "choose", "write_samples", "main"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = PROJECT_ROOT.parent / "shared" / "fracatlas"
DEFAULT_OUT = PROJECT_ROOT / "data_samples" / "fracatlas"
SEED = 0
#: (what the category shows, query on labels.csv plus ``outlined`` = has an expert outline, how many).
#: Fractures come first (they carry outlines for the heat-map check); then normals, hardware and the
#: out-of-scope leg/hip. FracAtlas's upper-limb hardware images are all fractured, so hardware is too.
CATEGORIES = (
    ("fracture, hand/wrist/forearm view", "region == 'hand' and fractured == 1 and hardware == 0 and outlined", 5),
    ("fracture, shoulder", "region == 'shoulder' and fractured == 1 and hardware == 0 and outlined", 1),
    ("fracture, whole arm", "region == 'hand+shoulder' and fractured == 1 and hardware == 0 and outlined", 1),
    ("no fracture, hand/wrist/forearm view", "region == 'hand' and fractured == 0 and hardware == 0", 3),
    ("no fracture, shoulder", "region == 'shoulder' and fractured == 0 and hardware == 0", 1),
    ("no fracture, whole arm", "region == 'hand+shoulder' and fractured == 0 and hardware == 0", 1),
    ("fracture with metal hardware, upper limb", "upper_limb and fractured == 1 and hardware == 1 and outlined", 1),
    ("leg/hip fracture: outside the model's scope", "region == 'leg/hip' and fractured == 1 and outlined", 1),
)
README = """# Real radiographs from FracAtlas (CC BY 4.0)

{count} radiographs from FracAtlas, shown by MURA Lens when no MURA folder is set. They are
**resized** copies (longest side 512 px, JPEG quality 90, EXIF orientation applied) of the
originals, made for `../shared/fracatlas`, and copied here unchanged with their labels and expert
fracture outlines (rescaled to these pixels).

> Abedeen I, Rahman MA, Prottyasha FZ, Ahmed T, Chowdhury TM, Shatabda S. FracAtlas: A Dataset for
> Fracture Classification, Localization and Segmentation of Musculoskeletal Radiographs.
> Scientific Data 10, 521 (2023). doi:10.1038/s41597-023-02432-4. Data: figshare
> doi:10.6084/m9.figshare.22363012. Licence: Creative Commons Attribution 4.0 (CC BY 4.0),
> https://creativecommons.org/licenses/by/4.0/. Changes: resized; a subset.

The label is **fracture** (expert-drawn), not MURA's broader **abnormal**. The model shipped with
MURA Lens was trained on MURA humerus and forearm only: the leg/hip image is outside its scope.

Chosen by `data_samples/make_fracatlas_samples.py` with a fixed rule, blind to any model: images
that FracAtlas stores twice are left out, then a seeded draw (seed {seed}) per category:

| Category | Images |
|---|---|
{table}
"""


def choose(images: pd.DataFrame, outlined: set[str], duplicated: set[str], *, seed: int = SEED) -> pd.DataFrame:
    """The rows of ``images`` the rule picks, in CATEGORIES order, with a ``category`` column."""
    pool = images[~images["file"].isin(duplicated)].assign(outlined=lambda t: t["file"].isin(outlined))
    pool = pool.sort_values("file", kind="stable")
    rng = np.random.default_rng(seed)
    chosen = []
    for category, query, count in CATEGORIES:
        candidates = pool.query(query)
        candidates = candidates[~candidates["file"].isin([f for part in chosen for f in part["file"]])]
        picks = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
        chosen.append(candidates.iloc[np.sort(picks)].assign(category=category))
    return pd.concat(chosen, ignore_index=True).drop(columns="outlined")


def write_samples(source: Path, out: Path, *, seed: int = SEED) -> pd.DataFrame:
    """Copy the chosen images, their labels and outlines from ``source`` into the root ``out``."""
    images = fracatlas.read_images(source)
    outlines = fracatlas.read_outlines(source)
    files = images["file"].astype(str).tolist()
    groups = pd.Series(fracatlas.duplicate_groups(source, files), index=files)
    duplicated = set(groups[groups.duplicated(keep=False)].index)
    chosen = choose(images, set(outlines.files()), duplicated, seed=seed)
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    for file in chosen["file"]:
        shutil.copyfile(fracatlas.image_file(source, file), fracatlas.image_file(out, file))
    # labels.csv keeps the source's columns and values exactly (upper_limb as 0/1, as stored).
    labels = pd.read_csv(source / fracatlas.LABELS_FILE).set_index("file").loc[chosen["file"]].reset_index()
    labels.to_csv(out / fracatlas.LABELS_FILE, index=False)
    coco = json.loads((source / fracatlas.COCO_FILE).read_text())
    keep_ids = {image["id"] for image in coco["images"] if image["file_name"] in set(chosen["file"])}
    subset = {key: value for key, value in coco.items() if key not in ("images", "annotations")}
    subset["images"] = [image for image in coco["images"] if image["id"] in keep_ids]
    subset["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep_ids]
    (out / fracatlas.COCO_FILE).write_text(json.dumps(subset, indent=1) + "\n")
    counts = chosen.groupby("category", sort=False).size()
    table = "\n".join(f"| {category} | {n} |" for category, n in counts.items())
    (out / "README.md").write_text(README.format(count=len(chosen), seed=seed, table=table))
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python data_samples/make_fracatlas_samples.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--source", default=str(DEFAULT_SOURCE), help="a FracAtlas root (holding labels.csv)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the sample root to (re)write")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    try:
        chosen = write_samples(fracatlas.resolve_root(args.source), Path(args.out), seed=args.seed)
    except (fracatlas.FracAtlasError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for row in chosen.itertuples():
        print(f"{row.file}\t{row.category}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
