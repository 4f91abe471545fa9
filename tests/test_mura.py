"""core.mura: official layout, partial copies, and roots that try to escape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core import mura
from tests.fake_mura import make_fake_mura


@pytest.fixture()
def fake_root(tmp_path: Path) -> Path:
    return make_fake_mura(tmp_path, patients_per_type=4, missing=2)


def test_reads_images_and_studies_with_labels(fake_root: Path) -> None:
    images = mura.read_images(fake_root, "train", present_only=False)
    assert set(images.columns) >= {"path", "split", "study_type", "patient", "study", "study_path", "label", "present"}
    assert images["path"].str.startswith("MURA-v1.1/train/").all()
    polarity = images["study_path"].str.contains("_positive").astype(int)
    assert (images["label"] == polarity).all()
    studies = mura.read_studies(fake_root, "train")
    assert len(studies) == images["study_path"].nunique() == 8
    assert studies["n_images"].sum() == len(images)


def test_partial_copy_lists_what_is_missing(fake_root: Path) -> None:
    every = mura.read_images(fake_root, "train", present_only=False)
    present = mura.read_images(fake_root, "train")
    assert len(every) - len(present) == 2
    table = mura.coverage(fake_root)
    train = table[table["split"] == "train"]
    assert train["images_listed"].sum() - train["images_present"].sum() == 2
    assert not train["complete"].all()


@pytest.mark.parametrize("bad", ["", "nowhere/at/all"])
def test_missing_or_empty_root_is_a_clear_error(tmp_path: Path, bad: str) -> None:
    target = tmp_path / bad if bad else tmp_path
    with pytest.raises(mura.MuraRootError, match=r"(does not exist|official MURA CSVs)"):
        mura.resolve_root(target)


def test_file_instead_of_folder(tmp_path: Path) -> None:
    file = tmp_path / "x.txt"
    file.write_text("hi")
    with pytest.raises(mura.MuraRootError, match="is a file"):
        mura.resolve_root(file)


@pytest.mark.parametrize(
    "path",
    [
        "MURA-v1.1/../../etc/passwd",
        "/etc/passwd",
        "MURA-v1.1/valid/XR_HUMERUS/patient1/study1_positive/../../../../../etc/passwd",
        "MURA-v1.1/valid/XR_HUMERUS/patient00001/study1_positive/image1.png/../../x",
    ],
)
def test_paths_that_are_not_official_are_refused(fake_root: Path, path: str) -> None:
    with pytest.raises(mura.MuraRootError):
        mura.image_file(fake_root, path)


def test_symlink_escaping_the_root_is_refused(fake_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "image1.png").write_bytes(b"secret")
    link_parent = fake_root / "valid" / "XR_HUMERUS" / "patient99999"
    link_parent.mkdir(parents=True)
    os.symlink(outside, link_parent / "study1_positive")
    official = "MURA-v1.1/valid/XR_HUMERUS/patient99999/study1_positive/image1.png"
    with pytest.raises(mura.MuraRootError, match="outside"):
        mura.image_file(fake_root, official)


def test_csv_row_escaping_the_root_is_rejected(fake_root: Path) -> None:
    csv = fake_root / "valid_image_paths.csv"
    csv.write_text(csv.read_text() + "MURA-v1.1/valid/../../../etc/passwd\n")
    with pytest.raises(mura.MuraRootError, match="not official MURA paths"):
        mura.read_images(fake_root, "valid")


@pytest.mark.mura
def test_real_copy_matches_its_readme(mura_root: Path) -> None:
    images = mura.read_images(mura_root, "valid")
    counts = images.groupby("study_type").size()
    assert counts["XR_HUMERUS"] == 288 and counts["XR_FOREARM"] == 301
    studies = images.groupby("study_type")["study_path"].nunique()
    assert studies["XR_HUMERUS"] == 135 and studies["XR_FOREARM"] == 133
    train = mura.read_images(mura_root, "train")
    assert len(train[train["study_type"].isin(["XR_HUMERUS", "XR_FOREARM"])]) == 1272 + 1825
