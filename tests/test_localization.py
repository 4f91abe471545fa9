"""core.eval.localization: hit, energy, IoU/Dice and Otsu on hand-made maps and masks with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.eval import localization
from core.eval.localization import BRIGHT_BONE, THRESHOLD_GRID, UNIFORM, grid_column, score_map
from core.eval.metrics import bootstrap_means


def _mask(shape: tuple[int, int] = (100, 100), rows: slice = slice(40, 60), cols: slice = slice(40, 60)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


def _peak_at(row: int, col: int, shape: tuple[int, int] = (100, 100)) -> np.ndarray:
    heat = np.zeros(shape, dtype=np.float32)
    heat[row, col] = 1.0
    return heat


def test_maximum_inside_the_outline_is_a_hit() -> None:
    assert score_map(_peak_at(50, 50), _mask()).hit == 1.0


def test_maximum_far_from_the_outline_is_a_miss() -> None:
    assert score_map(_peak_at(5, 5), _mask()).hit == 0.0


def test_tolerance_is_fifteen_pixels_euclidean() -> None:
    # The outline's last column is 59: 15 px to the right is a hit, 16 px a miss; diagonally
    # (10, 10) away is 14.1 px (hit) and (11, 11) is 15.6 px (miss).
    mask = _mask()
    assert score_map(_peak_at(50, 59 + 15), mask).hit == 1.0
    assert score_map(_peak_at(50, 59 + 16), mask).hit == 0.0
    assert score_map(_peak_at(59 + 10, 59 + 10), mask).hit == 1.0
    assert score_map(_peak_at(59 + 11, 59 + 11), mask).hit == 0.0
    assert score_map(_peak_at(50, 59 + 16), mask, tolerance=20).hit == 1.0


def test_tied_maxima_count_by_share() -> None:
    heat = _peak_at(50, 50) + _peak_at(5, 5)
    assert score_map(heat, _mask()).hit == 0.5


def test_energy_inside_is_the_share_of_mass() -> None:
    # 400 outlined pixels at 1.0 and 400 others at 1/3 (after min-max scaling): 400 / (400 + 400/3).
    heat = np.zeros((100, 100), dtype=np.float32)
    heat[40:60, 40:60] = 3.0
    heat[0:20, 0:20] = 1.0
    assert score_map(heat, _mask()).energy == pytest.approx(0.75)
    assert localization.energy_inside(np.zeros((4, 4)), _mask((4, 4), slice(0, 2), slice(0, 4))) == 0.5


def test_iou_and_dice_at_otsu_on_a_half_overlapping_block() -> None:
    mask = _mask(rows=slice(0, 10), cols=slice(0, 20))  # 200 px
    heat = np.zeros((100, 100), dtype=np.float32)
    heat[0:10, 10:30] = 1.0  # 200 px, 100 of them outlined
    scores = score_map(heat, mask)
    assert scores.iou == pytest.approx(100 / 300)
    assert scores.dice == pytest.approx(2 * 100 / 400)
    assert scores.iou_grid == pytest.approx([100 / 300] * len(THRESHOLD_GRID))


def test_otsu_threshold_splits_two_levels() -> None:
    heat = np.r_[np.full(500, 0.2), np.full(500, 0.7)].reshape(10, 100)
    threshold = localization.otsu_threshold(heat)
    assert 0.2 <= threshold < 0.7
    # Three levels: a small black corner (100 px), a wide dim area at 0.2 and a bright core
    # (100 px). The between-class variance is largest at the dim/bright split (0.0064 against
    # 0.0004 at the black/dim one), so Otsu keeps the core alone; the grid at 0.1 keeps the dim area.
    heat = np.full((100, 100), 0.2, dtype=np.float32)
    heat[0:10, 0:10] = 0.0
    heat[45:55, 45:55] = 1.0
    scores = score_map(heat, _mask(rows=slice(45, 55), cols=slice(45, 55)))
    assert 0.2 <= scores.otsu_threshold < 1.0
    assert scores.iou == pytest.approx(1.0)
    assert scores.iou_grid[THRESHOLD_GRID.index(0.5)] == pytest.approx(1.0)
    assert scores.iou_grid[THRESHOLD_GRID.index(0.1)] == pytest.approx(100 / 9900)


def test_uniform_map_scores_the_chance_levels() -> None:
    mask = _mask()
    share = mask.mean()
    scores = score_map(localization.baseline_maps(np.zeros((100, 100), np.uint8))[UNIFORM], mask)
    assert scores.hit == pytest.approx(localization.tolerance_region(mask).mean())
    assert scores.energy == pytest.approx(share)
    assert scores.iou == pytest.approx(share) and scores.dice == pytest.approx(2 * share / (1 + share))
    assert score_map(np.zeros((100, 100)), mask) == scores  # a flat CAM is the uniform map


def test_bright_bone_map_is_the_image_intensity() -> None:
    pixels = np.zeros((100, 100), np.uint8)
    pixels[40:60, 40:60] = 200
    bright = localization.baseline_maps(pixels)[BRIGHT_BONE]
    scores = score_map(bright, _mask())
    assert (scores.hit, scores.energy, scores.iou) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("heat", "mask", "message"),
    [
        (np.zeros((4, 4)), np.ones((4, 5), bool), "differ in size"),
        (np.zeros((4, 4)), np.zeros((4, 4), bool), "no outlined region"),
    ],
)
def test_bad_input_is_one_sentence(heat: np.ndarray, mask: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score_map(heat, mask)


def test_bootstrap_means_on_one_class_data() -> None:
    # core.eval.metrics' other bootstraps skip resamples without both labels; every localisation row
    # is a fracture, so this one must not need labels.
    values = np.c_[np.r_[np.ones(30), np.zeros(70)], np.full(100, 0.25)]
    intervals = bootstrap_means(values, names=["hit", "energy"], n_boot=200, seed=0)
    assert intervals["hit"].point == pytest.approx(0.3)
    assert 0.15 < intervals["hit"].low < 0.3 < intervals["hit"].high < 0.45
    assert intervals["hit"].n_skipped == 0
    assert (intervals["energy"].low, intervals["energy"].high) == pytest.approx((0.25, 0.25))


def _rows(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frames = []
    for method, layer, hit_rate in [
        ("GradCAM", "last", 0.9),
        ("FEM", "last", 0.2),
        (UNIFORM, "", 0.05),
        (BRIGHT_BONE, "", 0.3),
    ]:
        hits = (rng.random(n) < hit_rate).astype(float)
        frame = pd.DataFrame(
            {
                "image": [f"images/{i:03d}.jpg" for i in range(n)],
                "method": method,
                "layer": layer,
                "hit": hits,
                "energy": hits / 2,
                "iou": hits / 4,
                "dice": hits / 3,
            }
        )
        for t in THRESHOLD_GRID:
            frame[grid_column(t)] = hits * t
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_summary_ranks_methods_against_the_bright_bone_map() -> None:
    rows = _rows()
    summary = localization.summarise(rows, n_boot=200)
    groups = {(g["method"], g["layer"]): g for g in summary["groups"]}
    assert summary["n_images"] == 40 and len(groups) == 4
    grad = groups[("GradCAM", "last")]
    assert grad["hit"]["point"] == pytest.approx(rows.query("method == 'GradCAM'")["hit"].mean())
    assert grad["hit"]["low"] <= grad["hit"]["point"] <= grad["hit"]["high"]
    assert grad["beats_bright_bone"]["hit"] and not groups[("FEM", "last")]["beats_bright_bone"]["hit"]
    assert grad["iou_grid"]["0.5"] == pytest.approx(0.5 * grad["hit"]["point"])
    assert "vs_bright_bone" not in groups[(UNIFORM, "")]
