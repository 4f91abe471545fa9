"""core.eval.before_after: the abnormal model and the fracture-aware model on the same test fractures, on small
synthetic caches whose answers are known, and the committed gallery against the committed caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.eval import before_after
from core.eval.before_after import AFTER, BEFORE, CHANCE, DIFFERENCE, MapChoice, ModelPair
from core.eval.localization_sweep import DATASET, ROW_COLUMNS
from core.store.artifacts import ModelArtifacts, write_pair

HEAD = "head conv (1280 ch, stride 32)"
BLOCK11 = "block 11 (112 ch, stride 16)"
FRACTURE_MAP = "fracture map (128 ch, stride 16)"
ARCHITECTURES = ("efficientnet_lite0", "efficientnet_lite0_fracture")
PAIR = ModelPair("base", "fracture_aware")


def _rows(scores: dict[tuple[str, str, str], dict[str, tuple[float, float]]]) -> pd.DataFrame:
    """Cache rows: (method, layer, target) -> image -> (hit, energy); every other row column empty."""
    records = [
        {"image": image, "method": method, "layer": layer, "target": target, "hit": hit, "energy": energy}
        for (method, layer, target), images in scores.items()
        for image, (hit, energy) in images.items()
    ]
    return pd.DataFrame(records).reindex(columns=ROW_COLUMNS)


def _split(files: dict[str, str], groups: dict[str, str] | None = None) -> pd.DataFrame:
    """A FracAtlas split file's rows: file -> part, copy groups as given (else each file its own)."""
    groups = groups or {}
    return pd.DataFrame(
        {
            "file": list(files),
            "region": "hand",
            "fractured": 1,
            "hardware": 0,
            "copy_group": [groups.get(f, f) for f in files],
            "part": list(files.values()),
        }
    )


# Test images a-d; "trained" is in the base model's cache (it covers all of FracAtlas) and, by mistake, in
# the fracture-aware one's: it must never be compared. "extra" is only in the base model's cache.
BEFORE_ROWS = _rows(
    {
        ("GradCAM", HEAD, "abnormal"): {
            "a": (0, 0.1),
            "b": (0, 0.2),
            "c": (1, 0.3),
            "d": (0, 0.4),
            "trained": (1, 0.9),
            "extra": (1, 0.9),
        },
        ("LayerCAM", BLOCK11, "abnormal"): {"a": (1, 0.5), "b": (1, 0.5), "c": (1, 0.5), "d": (1, 0.5)},
        ("HiResCAM", BLOCK11, "abnormal"): {"a": (1, 0.2), "b": (0, 0.2), "c": (1, 0.2), "d": (0, 0.2)},
        ("uniform", "", ""): {k: (0.01, 0.02) for k in ("a", "b", "c", "d", "trained", "extra")},
    }
)
AFTER_ROWS = _rows(
    {
        ("GradCAM", FRACTURE_MAP, "fracture"): {
            "a": (1, 0.2),
            "b": (1, 0.3),
            "c": (1, 0.4),
            "d": (0, 0.5),
            "trained": (0, 0.0),
        },
        ("HiResCAM", FRACTURE_MAP, "fracture"): {"a": (1, 0.6), "b": (1, 0.6), "c": (1, 0.6), "d": (1, 0.6)},
        ("uniform", "", ""): {k: (0.01, 0.02) for k in ("a", "b", "c", "d", "trained")},
    }
)
SPLIT = _split({"a": "test", "b": "test", "c": "test", "d": "test", "trained": "fold0", "extra": "fold1"})


def _compare(sanity=(None, None), split=SPLIT, n_boot=400):
    return before_after.compare(
        PAIR, BEFORE_ROWS, AFTER_ROWS, architectures=ARCHITECTURES, sanity=sanity, split=split, n_boot=n_boot
    )


def test_only_the_fracture_models_untrained_test_images_are_compared():
    assert before_after.compared_images(BEFORE_ROWS, AFTER_ROWS, ["a", "b", "c", "d", "extra"]) == ["a", "b", "c", "d"]
    assert before_after.compared_images(BEFORE_ROWS, AFTER_ROWS, None) == ["a", "b", "c", "d", "trained"]
    comparison = _compare()
    assert comparison.images == ("a", "b", "c", "d") and comparison.n_groups == 4


def test_opening_maps_and_known_means():
    comparison = _compare()
    assert comparison.opening_maps == (
        MapChoice("GradCAM", HEAD, "abnormal"),
        MapChoice("GradCAM", FRACTURE_MAP, "fracture"),
    )
    table = comparison.opening
    # The base model's "trained" and "extra" rows (hit 1, energy 0.9) would raise its means if they leaked in.
    assert table.loc[BEFORE, "hit"] == pytest.approx(0.25) and table.loc[BEFORE, "energy"] == pytest.approx(0.25)
    assert table.loc[AFTER, "hit"] == pytest.approx(0.75) and table.loc[AFTER, "energy"] == pytest.approx(0.35)
    assert table.loc[DIFFERENCE, "hit"] == pytest.approx(0.5)
    assert table.loc[CHANCE, "hit"] == pytest.approx(0.01)


def test_the_difference_is_paired_image_by_image():
    """After's energy is before's + 0.1 on every image: each model's interval is wide, the paired one is not."""
    comparison = _compare()
    table = comparison.opening
    assert table.loc[DIFFERENCE, "energy"] == pytest.approx(0.1)
    assert table.loc[DIFFERENCE, "energy_low"] == pytest.approx(0.1) == table.loc[DIFFERENCE, "energy_high"]
    assert table.loc[BEFORE, "energy_high"] - table.loc[BEFORE, "energy_low"] > 0.1


def test_copy_groups_are_resampled_whole():
    """Three of four images are copies of one radiograph: a resample draws the copies together, so the
    before map's hit rate (hit only on c) can be 0 or 1 in a resample, but never 1/4 or 1/2."""
    split = _split(
        {"a": "test", "b": "test", "c": "test", "d": "test", "trained": "fold0"}, groups={"a": "g", "b": "g", "d": "g"}
    )
    assert before_after.copy_groups(["a", "b", "c", "d"], split) == ["g", "g", "c", "g"]
    comparison = _compare(split=split)
    assert comparison.n_groups == 2
    table = comparison.opening
    assert table.loc[BEFORE, "hit_low"] == pytest.approx(0.0) and table.loc[BEFORE, "hit_high"] == pytest.approx(1.0)


def test_best_passing_map_skips_maps_that_fail_and_says_which_output_is_unchecked():
    sanity = {("LayerCAM", BLOCK11): "fails", ("HiResCAM", BLOCK11): "passes", ("GradCAM", HEAD): "passes"}
    comparison = _compare(sanity=(sanity, None))
    # LayerCAM hits every image but fails the check; HiResCAM (0.5) beats GradCAM (0.25) among those that pass.
    assert comparison.passing_maps == (MapChoice("HiResCAM", BLOCK11, "abnormal"), None)
    assert comparison.unchecked == (AFTER,)
    assert comparison.passing.loc[BEFORE, "hit"] == pytest.approx(0.5)
    assert comparison.passing.loc[[AFTER, DIFFERENCE], "hit"].isna().all()
    checked = _compare(sanity=(sanity, {("HiResCAM", FRACTURE_MAP): "passes"}))
    assert checked.unchecked == () and checked.passing.loc[DIFFERENCE, "hit"] == pytest.approx(0.5)
    assert _compare().passing is None


def test_gallery_rule_takes_turns_over_the_outcomes():
    outcomes = pd.DataFrame(
        {
            "image": ["e", "d", "c", "b", "a", "f"],
            "before": ["miss", "miss", "hit", "miss", "hit", "miss"],
            "after": ["hit", "hit", "hit", "miss", "miss", "hit"],
        }
    )
    # (miss, hit): d, e, f; (hit, hit): c; (miss, miss): b; (hit, miss): a.
    assert before_after.gallery_images(outcomes, set("abcdef")) == ["d", "c", "b", "a"]
    assert before_after.gallery_images(outcomes, set("abcdef"), size=6) == ["d", "c", "b", "a", "e", "f"]
    assert before_after.gallery_images(outcomes, {"e", "f", "b"}) == ["e", "b", "f"]


def _model(directory: Path, name: str, card: dict, rows: pd.DataFrame | None = None) -> None:
    folder = directory / name
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"")
    (folder / "model_card.json").write_text(json.dumps({"name": name, "thresholds": {}} | card))
    if rows is not None:
        files = ModelArtifacts(folder)
        text = rows.to_csv(index=False)
        write_pair(files.localization(DATASET), files.localization_summary(DATASET), text, {}, hash_key="rows_sha256")


FRACTURE_CARD = {
    "architecture": ARCHITECTURES[1],
    "outputs": {"abnormal": {}, "fracture": {"recipe": {"base_model": PAIR.before}}},
}


def test_the_pair_is_read_from_the_cards(tmp_path: Path):
    _model(tmp_path, PAIR.before, {"architecture": ARCHITECTURES[0]})
    _model(tmp_path, "other", {"architecture": "mobilenet_v2"})
    assert before_after.model_pair(PAIR.before, tmp_path) is None
    _model(tmp_path, PAIR.after, FRACTURE_CARD)
    for name in (PAIR.before, PAIR.after, "other"):
        assert before_after.model_pair(name, tmp_path) == PAIR


def test_a_missing_cache_is_one_sentence(tmp_path: Path):
    _model(tmp_path, PAIR.before, {"architecture": ARCHITECTURES[0]}, BEFORE_ROWS)
    _model(tmp_path, PAIR.after, FRACTURE_CARD)
    said = before_after.compare_models(PAIR, tmp_path)
    assert isinstance(said, str) and said.startswith(f"No heat-map accuracy cache for {PAIR.after} yet")
    assert f"python -m core.localize --root ../shared/fracatlas --model {PAIR.after}" in said


def test_cached_rows_are_compared_like_the_tables(tmp_path: Path):
    _model(tmp_path, PAIR.before, {"architecture": ARCHITECTURES[0]}, BEFORE_ROWS)
    _model(tmp_path, PAIR.after, FRACTURE_CARD, AFTER_ROWS)
    SPLIT.to_csv(tmp_path / PAIR.after / "fracatlas_split.csv", index=False)
    comparison = before_after.compare_models(PAIR, tmp_path, n_boot=400)
    assert not isinstance(comparison, str), comparison
    pd.testing.assert_frame_equal(comparison.opening, _compare().opening)
    assert comparison.unchecked == (BEFORE, AFTER)  # neither folder has a trust cache


def test_the_committed_gallery_shows_the_committed_caches():
    """The shipped gallery was drawn from the shipped caches, and its images are shipped with the app."""
    pair = before_after.model_pair("mura_efficientnet_lite0")
    assert pair is not None
    comparison = before_after.compare_models(pair, n_boot=50)
    assert not isinstance(comparison, str), comparison
    gallery = before_after.read_gallery(ModelArtifacts.of(pair.after))
    assert gallery is not None and before_after.stale_reason(gallery, comparison) is None
    samples = Path(__file__).resolve().parent.parent / "data_samples" / "fracatlas"
    assert 2 <= len(gallery.images) <= before_after.GALLERY_SIZE
    assert all((samples / image).is_file() and image in comparison.images for image in gallery.images)
    assert len({outcome for outcome in gallery.outcomes}) >= 2  # a mix, not only successes
    for (before_map, after_map), image in zip(gallery.heatmaps, gallery.images, strict=True):
        assert before_map.dtype == after_map.dtype == np.uint8 and before_map.shape == after_map.shape, image


def test_an_unreadable_gallery_is_one_sentence(tmp_path: Path):
    files = ModelArtifacts(tmp_path)
    files.before_after_gallery.write_bytes(b"not an npz")
    with pytest.raises(before_after.GalleryError, match="re-run python -m core.before_after"):
        before_after.read_gallery(files)


def test_the_fracture_outputs_trust_cache_names_its_best_passing_map(tmp_path: Path):
    """Once core.trust has checked P(fracture) (its own cache beside the abnormal one), the after model gets a
    best passing map and a paired difference; here the shipped abnormal cache's files stand in for it."""
    after_rows = pd.concat(
        [AFTER_ROWS, _rows({("HiResCAM", BLOCK11, "fracture"): {k: (1, 0.3) for k in "abcd"}})], ignore_index=True
    )
    _model(tmp_path, PAIR.before, {"architecture": ARCHITECTURES[0]}, BEFORE_ROWS)
    _model(tmp_path, PAIR.after, FRACTURE_CARD, after_rows)
    shipped, files = ModelArtifacts.of("mura_efficientnet_lite0"), ModelArtifacts.of(PAIR.after, tmp_path)
    files.trust_rows("fracture").write_bytes(shipped.trust_rows().read_bytes())
    files.trust_summary("fracture").write_bytes(shipped.trust_summary().read_bytes())
    comparison = before_after.compare_models(PAIR, tmp_path, n_boot=100)
    assert not isinstance(comparison, str), comparison
    assert comparison.unchecked == (BEFORE,)
    assert comparison.passing_maps == (None, MapChoice("HiResCAM", BLOCK11, "fracture"))
    assert comparison.passing.loc[AFTER, "hit"] == pytest.approx(1.0)
