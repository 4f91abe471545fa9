"""Pack MURA train/ (or valid/) study types into a small transport copy for another machine.

    python scripts/pack_mura.py --mura-root ../shared/mura/MURA-v1.1 --out .gpu/mura [--split train] [--quality 90]

A GPU machine lent for a session takes at most 64 MiB with it; PNG radiographs of humerus and
forearm train/ are 117 MB, WebP (quality 90) of the same pixels about 17 MB. The copy keeps
the official layout, CSVs and file names (a file called ``image1.png`` holds WebP bytes; PIL
reads by content), so ``core.train --mura-root`` runs on it unchanged. The copy holds MURA
pixels: keep it in a git-ignored folder and never commit it (see the data rules in README).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import mura  # noqa: E402


def pack(root: Path, out: Path, study_types: list[str], quality: int, split: str = "train") -> int:
    """Write the ``split`` images of ``study_types`` under ``out``; return the bytes written."""
    images = mura.read_images(root, split)
    images = images[images["study_type"].isin(study_types)]
    out.mkdir(parents=True, exist_ok=True)
    for name in (f"{split}_image_paths.csv", f"{split}_labeled_studies.csv"):
        shutil.copyfile(root / name, out / name)
    written = 0
    for official_path in tqdm(images["path"], desc="pack", unit="img"):
        target = mura.image_file(out, official_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(mura.image_file(root, official_path)) as image:
            image.convert("L").save(target, "WEBP", quality=quality, method=6)
        written += target.stat().st_size
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mura-root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--study-types", nargs="+", default=["XR_HUMERUS", "XR_FOREARM"])
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--split", choices=mura.SPLITS, default="train")
    args = parser.parse_args(argv)
    written = pack(mura.resolve_root(args.mura_root), Path(args.out), args.study_types, args.quality, args.split)
    print(f"{written / 1e6:.1f} MB of images in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
