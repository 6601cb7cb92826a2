"""The tests a drift check runs, on data whose truth is known: calibrated under no shift, powered under one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from retina_core.drift.mmd import mmd_test
from retina_core.drift.twosample import holm, ks_test, label_test, standardised_shift


def binomial_ceiling(alpha: float, draws: int) -> float:
    """The largest false-flag rate a correctly calibrated test shows in ``draws`` draws 999 times in 1000."""
    return stats.binom.ppf(0.999, draws, alpha) / draws


def test_holm_matches_its_definition() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    # sorted: 0.005*5, 0.01*4, 0.03*3, 0.04*2, 0.5*1, then made monotone
    expected = {3: 0.025, 0: 0.04, 2: 0.09, 1: 0.09, 4: 0.5}
    adjusted = holm(p)
    assert adjusted.tolist() == pytest.approx([expected[i] for i in range(5)])
    assert holm([]).size == 0 and holm([0.9, 0.9]).tolist() == [1.0, 1.0]


def test_holm_keeps_the_family_wise_error_under_the_null() -> None:
    rng = np.random.default_rng(0)
    draws = 2000
    flagged = sum((holm(rng.uniform(size=14)) < 0.05).any() for _ in range(draws))
    assert flagged / draws <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / draws)
    # ...while rejecting each raw p below 0.05 would flag a batch about half the time
    assert sum((rng.uniform(size=14) < 0.05).any() for _ in range(200)) / 200 > 0.35


def test_ks_and_effect_size_see_a_shift_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(100, 10, 400)
    same = rng.normal(100, 10, 100)
    brighter = rng.normal(108, 10, 100)
    assert ks_test(reference, same)[1] > 0.05 and standardised_shift(reference, same) < 0.3
    _, p = ks_test(reference, brighter)
    assert p < 1e-4 and standardised_shift(reference, brighter) == pytest.approx(0.8, abs=0.25)
    assert ks_test(np.full(5, 3.0), np.full(4, 3.0)) == (0.0, 1.0)  # constant feature: nothing moved


def test_label_test_flags_another_case_mix_only() -> None:
    reference = np.repeat([0, 1, 2, 3, 4], [180, 37, 100, 19, 30])
    same_mix = np.repeat([0, 1, 2, 3, 4], [49, 10, 27, 5, 8])
    other_mix = np.repeat([0, 1, 2, 3, 4], [10, 10, 20, 30, 30])
    _, p_same, v_same = label_test(reference, same_mix, 5)
    _, p_other, v_other = label_test(reference, other_mix, 5)
    assert p_same > 0.5 and v_same < 0.1
    assert p_other < 1e-6 and v_other > 0.3
    assert label_test([1, 1, 1], [1, 1], 5) == (0.0, 1.0, 0.0)  # one class on both sides


def test_mmd_p_values_are_calibrated_without_shift_and_small_with_one() -> None:
    rng = np.random.default_rng(2)
    draws, rejected = 120, 0
    for seed in range(draws):
        x, y = rng.normal(size=(30, 8)), rng.normal(size=(20, 8))
        rejected += mmd_test(x, y, permutations=99, seed=seed).p_value <= 0.05
    assert rejected / draws <= binomial_ceiling(0.05, draws)
    shifted = mmd_test(rng.normal(size=(60, 8)), rng.normal(0.6, 1.0, size=(40, 8)), permutations=199)
    assert shifted.p_value == pytest.approx(1 / 200)  # no permutation reaches the observed statistic
    with pytest.raises(ValueError):
        mmd_test(np.zeros((5, 3)), np.zeros((5, 4)))
