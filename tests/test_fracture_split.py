"""The FracAtlas test part: copies on one side, shipped samples held out, no test image in any fold."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from core.data import fracture_split
from core.data.fracture_split import TEST, make_split, read_split, trained_on, training_rows
from core.model.checkpoint import save_ensemble_checkpoint
from core.model.fracture_training import FractureConfig, branch_file, oof_file, train_fold
from core.model.registry import create_model
from tests.fake_fracatlas import make_fake_fracatlas

PROJECT = Path(__file__).resolve().parent.parent
COMMITTED = PROJECT / "weights" / "mura_efficientnet_lite0_fracture" / fracture_split.SPLIT_FILE
SAMPLES = PROJECT / "data_samples" / "fracatlas"
SHARED_FRACATLAS = PROJECT.parent / "shared" / "fracatlas"


@pytest.fixture(scope="module")
def committed() -> pd.DataFrame:
    return read_split(COMMITTED)


def test_every_shipped_sample_is_in_the_test_part(committed: pd.DataFrame) -> None:
    shipped = pd.read_csv(SAMPLES / "labels.csv")["file"]
    parts = committed.set_index("file").loc[shipped, "part"]
    assert (parts == TEST).all()
    assert not any(trained_on(committed, file) for file in shipped)


def test_no_test_image_or_copy_is_in_any_training_fold(committed: pd.DataFrame) -> None:
    test_groups = set(committed.loc[committed["part"] == TEST, "copy_group"])
    for fold in range(4):
        fitted, held = training_rows(committed, fold)
        assert not set(fitted["file"]) & set(held["file"])
        assert not set(fitted["copy_group"]) & test_groups
        assert not set(fitted["copy_group"]) & set(held["copy_group"])
        assert (committed.loc[committed["file"].isin(fitted["file"]), "region"] != "leg/hip").all()
    share = (committed["part"] == TEST).mean()
    assert 0.18 <= share <= 0.25


def test_read_split_refuses_copies_split_across_parts(tmp_path: Path, committed: pd.DataFrame) -> None:
    broken = committed.copy()
    group = broken.loc[broken["copy_group"].duplicated(keep=False), "copy_group"].iloc[0]
    rows = broken.index[broken["copy_group"] == group]
    broken.loc[rows[0], "part"], broken.loc[rows[1], "part"] = "test", "fold0"
    broken.to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(fracture_split.SplitError, match="copies of one radiograph"):
        read_split(tmp_path / "split.csv")


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_FRACATLAS.is_dir(), reason="../shared/fracatlas is absent")
def test_committed_split_is_the_rule_applied_to_the_shared_copy(committed: pd.DataFrame) -> None:
    shipped = pd.read_csv(SAMPLES / "labels.csv")["file"].tolist()
    remade = make_split(SHARED_FRACATLAS, shipped)
    pd.testing.assert_frame_equal(remade.reset_index(drop=True), committed, check_dtype=False)


@pytest.mark.slow
def test_a_fold_trains_both_candidates_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_fake_fracatlas(tmp_path / "fracatlas")
    split = make_split(root, ["images/IMG0000001.jpg"], folds=2)
    split.to_csv(tmp_path / "split.csv", index=False)
    torch.manual_seed(0)
    weights = tmp_path / "weights"
    (weights / "base").mkdir(parents=True)
    save_ensemble_checkpoint(
        weights / "base" / "checkpoint.pt", [create_model("efficientnet_lite0")] * 2, "efficientnet_lite0", 224
    )
    monkeypatch.setenv("MURA_LENS_WEIGHTS_DIR", str(weights))
    config = FractureConfig(
        fracatlas=str(root),
        fold=0,
        out=str(tmp_path / "run"),
        split=str(tmp_path / "split.csv"),
        base_model="base",
        epochs=1,
        batch_size=2,
        channels_last=False,
    )
    out = train_fold(config)
    state = torch.load(out / "fracture_state.pt", weights_only=True)  # no pickle of arbitrary objects
    assert state["epoch"] == 0
    _, held = training_rows(split, 0)
    for candidate in ("J", "G"):
        assert branch_file(out, candidate).is_file()
        oof = pd.read_csv(oof_file(out, candidate))
        assert sorted(oof["file"]) == sorted(held["file"])
        assert oof["probability"].between(0, 1).all()
    first = pd.read_csv(oof_file(out, "G"))
    train_fold(config)  # resumes after the last epoch: nothing retrained, same predictions
    pd.testing.assert_frame_equal(pd.read_csv(oof_file(out, "G")), first)


def test_localisation_leaves_out_what_the_fracture_output_trained_on(tmp_path: Path, committed: pd.DataFrame) -> None:
    from types import SimpleNamespace

    from core.eval.localization_sweep import untrained

    (tmp_path / fracture_split.SPLIT_FILE).write_bytes(COMMITTED.read_bytes())
    loaded = SimpleNamespace(directory=tmp_path)
    images = pd.DataFrame({"file": [*committed["file"].head(40), "images/withheld.jpg"]})
    kept = set(untrained(loaded, images)["file"])
    parts = committed.set_index("file")["part"]
    assert "images/withheld.jpg" in kept
    assert all(not parts[f].startswith("fold") for f in kept if f in parts.index)
    assert len(kept) < len(images)
    assert len(untrained(SimpleNamespace(directory=tmp_path / "none"), images)) == len(images)
