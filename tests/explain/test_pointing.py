from __future__ import annotations

import math

import numpy as np
import pytest

from retina_core.explain.pointing import (
    PointingRecord,
    default_tolerance_px,
    energy_pointing_game,
    pointing_game_hit,
    random_map_baseline,
    score_pointing,
    smooth_random_maps,
    summarise_pointing,
)

SIDE = 64


def square_mask(top: int = 20, left: int = 20, side: int = 10, size: int = SIDE) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def peak_at(row: int, col: int, size: int = SIDE) -> np.ndarray:
    """A smooth bump whose maximum is exactly at (row, col)."""
    rr, cc = np.mgrid[:size, :size]
    return np.exp(-((rr - row) ** 2 + (cc - col) ** 2) / 50.0).astype(np.float32)


def test_tolerance_is_zhangs_15px_scaled_to_the_map() -> None:
    assert default_tolerance_px((224, 224)) == pytest.approx(15.0)
    assert default_tolerance_px((64, 64)) == pytest.approx(15.0 * 64 / 224)
    assert default_tolerance_px((3, 128, 128)) == pytest.approx(15.0 * 128 / 224)


def test_peak_inside_the_mask_is_a_hit_and_far_outside_a_miss() -> None:
    mask = square_mask()
    assert pointing_game_hit(peak_at(25, 25), mask)
    assert not pointing_game_hit(peak_at(55, 55), mask)


def test_tolerance_decides_a_peak_just_outside_the_mask() -> None:
    mask = square_mask()  # rows/cols 20..29
    near = peak_at(25, 33)  # 4 px right of the last lesion column
    assert not pointing_game_hit(near, mask, tolerance_px=0)
    assert not pointing_game_hit(near, mask, tolerance_px=3.9)
    assert pointing_game_hit(near, mask, tolerance_px=4.0)
    assert pointing_game_hit(near, mask)  # default at 64 px is 4.29 px


def test_tolerance_is_euclidean_not_a_square() -> None:
    mask = np.zeros((SIDE, SIDE), dtype=bool)
    mask[10, 10] = True
    diagonal = peak_at(13, 14)  # distance 5
    assert pointing_game_hit(diagonal, mask, tolerance_px=5.0)
    assert not pointing_game_hit(diagonal, mask, tolerance_px=4.9)


def test_constant_map_points_nowhere() -> None:
    mask = square_mask(top=0, left=0)  # np.argmax of a flat map would be (0, 0), inside
    assert not pointing_game_hit(np.ones((SIDE, SIDE)), mask)


def test_mask_at_another_resolution_is_resized_to_the_map() -> None:
    big_mask = square_mask(top=40, left=40, side=20, size=128)  # same square as 20..29 at 64 px
    assert pointing_game_hit(peak_at(25, 25), big_mask, tolerance_px=0)
    assert not pointing_game_hit(peak_at(35, 35), big_mask, tolerance_px=0)


def test_energy_of_uniform_map_is_the_mask_area_fraction() -> None:
    mask = square_mask(side=16)
    assert energy_pointing_game(np.full((SIDE, SIDE), 0.3), mask) == pytest.approx(mask.mean())
    assert energy_pointing_game(np.zeros((SIDE, SIDE)), mask) == pytest.approx(mask.mean())


def test_energy_of_map_confined_to_the_mask_is_one_and_outside_zero() -> None:
    mask = square_mask()
    assert energy_pointing_game(mask.astype(float), mask) == pytest.approx(1.0)
    assert energy_pointing_game((~mask).astype(float), mask) == pytest.approx(0.0)


def test_bad_inputs_are_rejected() -> None:
    mask = square_mask()
    with pytest.raises(ValueError, match="empty mask"):
        pointing_game_hit(peak_at(5, 5), np.zeros((SIDE, SIDE)))
    with pytest.raises(ValueError, match="non-negative"):
        energy_pointing_game(peak_at(5, 5) - 0.5, mask)
    with pytest.raises(ValueError, match="2-D"):
        pointing_game_hit(np.ones((1, SIDE, SIDE)), mask)


def test_random_maps_are_smooth_and_scaled_like_cams() -> None:
    maps = smooth_random_maps((48, 40), np.random.default_rng(0), n=5)
    assert maps.shape == (5, 48, 40)
    assert maps.dtype == np.float32
    assert np.allclose(maps.min(axis=(1, 2)), 0.0) and np.allclose(maps.max(axis=(1, 2)), 1.0)
    neighbour_step = np.abs(np.diff(maps, axis=2)).mean()
    assert neighbour_step < 0.05  # white noise in [0, 1] would step ~0.33 between neighbours


def test_random_baseline_is_about_the_area_fraction() -> None:
    mask = np.zeros((48, 48), dtype=bool)
    mask[:, :12] = True  # a quarter of the image, touching the border
    hit_rate, energy = random_map_baseline(mask, np.random.default_rng(1), n=400, tolerance_px=0)
    assert energy == pytest.approx(0.25, abs=0.03)
    assert hit_rate == pytest.approx(0.25, abs=0.08)
    dilated_hit_rate, _ = random_map_baseline(mask, np.random.default_rng(1), n=400, tolerance_px=6)
    assert dilated_hit_rate > hit_rate  # tolerance widens the target for random maps too


def test_random_baseline_is_reproducible_with_the_same_seed() -> None:
    mask = square_mask()
    first = random_map_baseline(mask, np.random.default_rng(7), n=40)
    second = random_map_baseline(mask, np.random.default_rng(7), n=40)
    assert first == second


def test_score_and_summary_per_class_exclude_normal_images() -> None:
    rng = np.random.default_rng(0)
    mask = square_mask()
    records = [
        score_pointing("CNV", peak_at(25, 25), mask, rng, n_random=20),
        score_pointing("CNV", peak_at(55, 55), mask, rng, n_random=20),
        score_pointing("DME", peak_at(22, 28), mask, rng, n_random=20),
        score_pointing("NORMAL", peak_at(25, 25), np.zeros((SIDE, SIDE)), rng, n_random=20),
    ]
    assert records[0].hit and not records[1].hit
    assert records[3].lesion_fraction == 0 and math.isnan(records[3].energy)

    table = {row.label: row for row in summarise_pointing(records)}
    assert list(table) == ["CNV", "DME", "NORMAL", "all"]
    assert (table["CNV"].n, table["CNV"].n_excluded, table["CNV"].hit_rate) == (2, 0, 0.5)
    assert table["CNV"].energy == pytest.approx((records[0].energy + records[1].energy) / 2)
    assert (table["NORMAL"].n, table["NORMAL"].n_excluded) == (0, 1)
    assert math.isnan(table["NORMAL"].hit_rate)
    assert (table["all"].n, table["all"].n_excluded) == (3, 1)
    assert table["all"].hit_rate == pytest.approx(2 / 3)
    assert 0 < table["all"].random_hit_rate < 0.3
    assert table["all"].to_dict()["label"] == "all"


def test_summary_of_hand_made_records() -> None:
    records = [
        PointingRecord("Mild", 0.1, True, 0.8, 0.1, 0.1),
        PointingRecord("Mild", 0.1, True, 0.6, 0.3, 0.1),
    ]
    (mild, everything) = summarise_pointing(records)
    assert (
        mild.hit_rate == 1.0
        and mild.energy == pytest.approx(0.7)
        and mild.random_hit_rate == pytest.approx(0.2)
    )
    assert everything.n == 2
