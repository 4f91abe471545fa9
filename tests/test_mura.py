"""core.data.mura: official layout, partial copies, and roots that try to escape."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from core.data import mura
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
    with pytest.raises(mura.MuraRootError, match="not official MURA paths") as caught:
        mura.read_images(fake_root, "valid")
    assert "passwd" not in str(caught.value), "a CSV's content is never repeated"


def test_csv_symlinked_out_of_the_root_is_refused_unread(fake_root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("MURA-v1.1/valid/XR_HUMERUS/patient1/study1_positive/image1.png\nTOKEN=hunter2\n")
    csv = fake_root / "valid_image_paths.csv"
    csv.unlink()
    csv.symlink_to(secret)
    with pytest.raises(mura.MuraRootError, match="valid_image_paths.csv leads outside the MURA folder") as caught:
        mura.read_images(fake_root, "valid")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("csv", "content", "words"),
    [
        ("valid_image_paths.csv", "", "lists no image"),
        ("valid_image_paths.csv", "\xff\xfe not utf-8\n", "cannot be read as a MURA CSV"),
        (
            "valid_image_paths.csv",
            "MURA-v1.1/train/XR_HUMERUS/patient00001/study1_positive/image1.png\n",
            "not official MURA paths of valid/ (first: row 1)",
        ),
        (
            "valid_labeled_studies.csv",
            "MURA-v1.1/valid/XR_HUMERUS/patient00001/study1_positive/,yes\n",
            "labels other than 0 and 1",
        ),
    ],
)
def test_crafted_csvs_are_one_sentence(fake_root: Path, csv: str, content: str, words: str) -> None:
    (fake_root / csv).write_bytes(content.encode("latin-1"))
    with pytest.raises(mura.MuraRootError, match=re.escape(words)):
        mura.read_images(fake_root, "valid")


def test_csv_larger_than_the_cap_is_refused_unread(fake_root: Path) -> None:
    with (fake_root / "valid_image_paths.csv").open("r+b") as handle:
        handle.truncate(mura.MAX_CSV_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(mura.MuraRootError, match="too large to be a MURA CSV"):
        mura.read_images(fake_root, "valid")


def test_csv_of_more_rows_than_mura_holds_is_refused(fake_root: Path) -> None:
    """Rows are capped too: short rows under the byte cap would still be costly to check one by one."""
    row = "MURA-v1.1/valid/XR_HUMERUS/patient11185/study1_positive/image1.png\n"
    (fake_root / "valid_image_paths.csv").write_text(row * (mura.MAX_CSV_ROWS + 1))
    assert len(row) * (mura.MAX_CSV_ROWS + 1) < mura.MAX_CSV_BYTES
    with pytest.raises(mura.MuraRootError, match="more than 50,000 rows"):
        mura.read_images(fake_root, "valid")


@pytest.mark.parametrize(
    ("typed", "words"),
    [
        ("~nosuchuser_mura_lens/MURA-v1.1", "names a home folder that does not exist"),
        ("/tmp/" + "x" * 300, "cannot be opened"),
        ("/tmp/nul\x00byte", "does not exist"),
    ],
)
def test_odd_folder_names_are_one_sentence(typed: str, words: str) -> None:
    with pytest.raises(mura.MuraRootError, match=words) as caught:
        mura.resolve_root(typed)
    message = str(caught.value)
    assert "\n" not in message and "\x00" not in message and len(message) < 200


def test_home_folder_is_named_as_typed_not_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home_of_the_server"))
    (tmp_path / "home_of_the_server").mkdir()
    with pytest.raises(mura.MuraRootError) as caught:
        mura.resolve_root("~")
    assert "home_of_the_server" not in str(caught.value) and str(caught.value).startswith("~ has none")


@pytest.mark.parametrize(("value", "locked"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_lock_switch(monkeypatch: pytest.MonkeyPatch, value: str, locked: bool) -> None:
    monkeypatch.setenv(mura.LOCK_ENV, value)
    assert mura.data_folder_locked() is locked


@pytest.mark.slow  # reads every row of the real copy
@pytest.mark.mura
def test_real_copy_matches_its_readme(mura_root: Path) -> None:
    images = mura.read_images(mura_root, "valid")
    counts = images.groupby("study_type").size()
    assert counts["XR_HUMERUS"] == 288 and counts["XR_FOREARM"] == 301
    studies = images.groupby("study_type")["study_path"].nunique()
    assert studies["XR_HUMERUS"] == 135 and studies["XR_FOREARM"] == 133
    train = mura.read_images(mura_root, "train")
    assert len(train[train["study_type"].isin(["XR_HUMERUS", "XR_FOREARM"])]) == 1272 + 1825
