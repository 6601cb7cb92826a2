from __future__ import annotations

import numpy as np
import pytest

from retina_core.evaluation.metrics import quadratic_weighted_kappa, roc_auc_binary
from retina_core.evaluation.thresholds import (
    apply_thresholds,
    fit_ordinal_scale,
    optimise_thresholds,
    regression_scores_to_probs,
)

NAIVE = np.array([0.5, 1.5, 2.5, 3.5])


def _biased_regressor(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A regressor that shrinks grades towards the mean (as MSE training does) and adds noise."""
    rng = np.random.default_rng(seed)
    y = rng.choice(5, size=n, p=[0.45, 0.1, 0.25, 0.08, 0.12])
    scores = 1.0 + 0.5 * y + rng.normal(scale=0.25, size=n)
    return y, scores


def test_apply_thresholds() -> None:
    labels = apply_thresholds(np.array([-1.0, 0.5, 0.49, 1.7, 3.5, 9.0]), NAIVE)
    assert labels.tolist() == [0, 1, 0, 2, 4, 4]
    with pytest.raises(ValueError):
        apply_thresholds(np.zeros(2), np.array([1.0, 0.5]))


def test_optimised_thresholds_beat_rounding_on_held_out_data() -> None:
    y_val, s_val = _biased_regressor(600, seed=0)
    y_test, s_test = _biased_regressor(600, seed=1)
    thresholds = optimise_thresholds(y_val, s_val)
    assert np.all(np.diff(thresholds) > 0)
    naive = quadratic_weighted_kappa(y_test, apply_thresholds(s_test, NAIVE), 5)
    tuned = quadratic_weighted_kappa(y_test, apply_thresholds(s_test, thresholds), 5)
    assert tuned > naive + 0.05
    # the grades' mean scores are 1.0, 1.5, ..., 3.0: each cut moved between its two neighbours
    grade_means = 1.0 + 0.5 * np.arange(5)
    assert np.all((grade_means[:-1] < thresholds) & (thresholds < grade_means[1:]))


def test_optimisation_is_deterministic_and_never_worse_than_rounding() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 150)
    scores = y + rng.normal(scale=0.6, size=150)
    first, second = optimise_thresholds(y, scores), optimise_thresholds(y, scores)
    np.testing.assert_array_equal(first, second)
    assert quadratic_weighted_kappa(y, apply_thresholds(scores, first), 5) >= quadratic_weighted_kappa(
        y, apply_thresholds(scores, NAIVE), 5
    )


def test_ordinal_probabilities_are_valid_and_keep_the_score_order() -> None:
    y, scores = _biased_regressor(400, seed=4)
    thresholds = optimise_thresholds(y, scores)
    scale = fit_ordinal_scale(y, scores, thresholds)
    assert 0.01 < scale < 1.0
    probs = regression_scores_to_probs(scores, thresholds, scale)
    assert probs.shape == (400, 5)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    referable = probs[:, 2:].sum(axis=1)
    # P(grade >= 2) rises with the score, so its AUC is the raw score's
    assert roc_auc_binary(y >= 2, referable) == pytest.approx(roc_auc_binary(y >= 2, scores))
