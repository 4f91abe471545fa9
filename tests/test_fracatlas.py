"""core.data.fracatlas: the FracAtlas reader, on tiny hand-made folders and on ../shared/fracatlas."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import fracatlas

SHARED_FRACATLAS = Path(
    os.environ.get("FRACATLAS_ROOT") or Path(__file__).resolve().parents[2] / "shared" / "fracatlas"
)
_HEADER = "file,image_id,region,upper_limb,fractured,fracture_count,hardware,width,height\n"


def _tiny_root(tmp_path: Path, coco: dict | None = None, labels: str | None = None) -> Path:
    (tmp_path / "images").mkdir(parents=True)
    for name in ("A.jpg", "B.jpg"):
        Image.new("L", (40, 30), 128).save(tmp_path / "images" / name)
    (tmp_path / "labels.csv").write_text(
        labels
        or (
            _HEADER
            + "images/A.jpg,A.jpg,hand,1,1,1,0,40,30\n"
            + "images/B.jpg,B.jpg,leg/hip,0,0,0,1,40,30\n"
            + "images/GONE.jpg,GONE.jpg,hand,1,0,0,0,40,30\n"
        )
    )
    coco = coco or {
        "images": [{"id": 1, "file_name": "images/A.jpg", "width": 40, "height": 30}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [10, 5, 10, 10], "segmentation": [[10, 5, 20, 5, 20, 15, 10, 15]]}
        ],
    }
    (tmp_path / "fractures_coco.json").write_text(json.dumps(coco))
    return tmp_path


def test_images_table_keeps_present_files(tmp_path):
    table = fracatlas.read_images(fracatlas.resolve_root(_tiny_root(tmp_path)))
    assert table["file"].tolist() == ["images/A.jpg", "images/B.jpg"]
    assert table["upper_limb"].tolist() == [True, False]
    assert table["hardware"].tolist() == [0, 1]


def test_outline_mask_and_box(tmp_path):
    outlines = fracatlas.read_outlines(_tiny_root(tmp_path))
    assert outlines.files() == ["images/A.jpg"]
    mask = outlines.mask("images/A.jpg")
    assert mask.shape == (30, 40)
    assert mask[10, 15] and not mask[0, 0] and not mask[25, 35]
    assert 100 <= mask.sum() <= 121  # the 10x10 square, edges included
    assert outlines.boxes["images/A.jpg"] == [(10.0, 5.0, 10.0, 10.0)]


@pytest.mark.parametrize("name", ["../outside.jpg", "/etc/passwd", "images/../../x.jpg"])
def test_paths_that_escape_the_root_are_refused(tmp_path, name):
    root = _tiny_root(tmp_path)
    with pytest.raises(fracatlas.FracAtlasError, match="FracAtlas folder"):
        fracatlas.image_file(root, name)
    coco = {"images": [{"id": 1, "file_name": name, "width": 4, "height": 4}], "annotations": []}
    (root / "fractures_coco.json").write_text(json.dumps(coco))
    with pytest.raises(fracatlas.FracAtlasError):
        fracatlas.read_outlines(root)


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root = _tiny_root(tmp_path / "root")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    (root / "images" / "link.jpg").symlink_to(outside)
    with pytest.raises(fracatlas.FracAtlasError, match="outside"):
        fracatlas.image_file(root, "images/link.jpg")


@pytest.mark.parametrize("coco_text", ["", "[]", '{"images": 3}', '{"images": [], "annotations": [{"image_id": 9}]}'])
def test_malformed_coco_is_one_sentence(tmp_path, coco_text):
    root = _tiny_root(tmp_path)
    (root / "fractures_coco.json").write_text(coco_text)
    with pytest.raises(fracatlas.FracAtlasError, match="fractures_coco.json"):
        fracatlas.read_outlines(root)


@pytest.mark.parametrize(
    "labels",
    [
        "file,region\nimages/A.jpg,hand\n",
        _HEADER + "images/A.jpg,A.jpg,hand,1,yes,1,0,40,30\n",
        _HEADER + "images/A.jpg,A.jpg,knee,1,1,1,0,40,30\n",
        _HEADER + "images/A.jpg,A.jpg,hand,1,2,1,0,40,30\n",
        "\x00\x01garbage",
    ],
)
def test_malformed_labels_are_one_sentence(tmp_path, labels):
    root = _tiny_root(tmp_path, labels=labels)
    with pytest.raises(fracatlas.FracAtlasError, match="labels.csv"):
        fracatlas.read_images(root)


@pytest.mark.parametrize("character", ["\r", "\n", "\x1b"])
def test_a_file_name_with_a_control_character_is_refused(tmp_path, character):
    """A CR in a name would split its row in every CSV written from it (pandas quotes only LF), and
    the rows that follow would not parse as numbers: refuse the folder in one sentence instead."""
    name = f"images/A{character}B.jpg"
    labels = _HEADER + f'"{name}",A.jpg,hand,1,1,1,0,40,30\n'
    root = _tiny_root(tmp_path, labels=labels)
    Image.new("L", (40, 30), 128).save(root / name, format="JPEG")
    with pytest.raises(fracatlas.FracAtlasError, match="control character") as raised:
        fracatlas.read_images(root)
    message = str(raised.value)
    assert "\n" not in message and "\r" not in message and "\x1b" not in message


def test_missing_root_and_labels(tmp_path):
    with pytest.raises(fracatlas.FracAtlasError, match="does not exist"):
        fracatlas.resolve_root(tmp_path / "nowhere")
    with pytest.raises(fracatlas.FracAtlasError, match="labels.csv"):
        fracatlas.resolve_root(tmp_path)


@pytest.mark.skipif(not (SHARED_FRACATLAS / "labels.csv").is_file(), reason="no FracAtlas copy at ../shared/fracatlas")
def test_shared_copy_reads_whole():
    root = fracatlas.resolve_root(SHARED_FRACATLAS)
    images = fracatlas.read_images(root)
    outlines = fracatlas.read_outlines(root)
    fractured = set(images.loc[images["fractured"] == 1, "file"])
    assert set(outlines.files()) <= set(images["file"])
    assert len(set(outlines.files()) & fractured) >= 0.95 * len(fractured)
    for file in outlines.files()[:20]:
        mask = outlines.mask(file)
        row = images.set_index("file").loc[file]
        assert mask.shape == (row["height"], row["width"]) and mask.any()
    assert isinstance(outlines.mask(outlines.files()[0]), np.ndarray)


def test_duplicate_groups_join_copies_of_one_radiograph(tmp_path):
    root = _tiny_root(tmp_path)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(30, 40), dtype=np.uint8)
    Image.fromarray(noise).save(root / "images" / "A.jpg", quality=95)
    Image.fromarray(noise).save(root / "images" / "C.jpg", quality=95)
    Image.fromarray(255 - noise).save(root / "images" / "B.jpg", quality=95)
    groups = fracatlas.duplicate_groups(root, ["images/A.jpg", "images/B.jpg", "images/C.jpg"])
    assert groups == ["images/A.jpg", "images/B.jpg", "images/A.jpg"]
    assert fracatlas.duplicate_groups(root, []) == []
    with pytest.raises(fracatlas.FracAtlasError, match="GONE.jpg"):
        fracatlas.duplicate_groups(root, ["images/GONE.jpg"])
