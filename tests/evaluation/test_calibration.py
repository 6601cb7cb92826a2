from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss

from retina_core.evaluation.calibration import (
    apply_temperature,
    binary_brier_score,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    softmax,
)


def _sample_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels drawn from the model's own probabilities: a perfectly calibrated model by construction."""
    cumulative = probs.cumsum(axis=1)
    return (rng.random((probs.shape[0], 1)) > cumulative).sum(axis=1).clip(0, probs.shape[1] - 1)


def _calibrated(n: int, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, k))
    return z, _sample_labels(softmax(z), rng)


def test_softmax_is_stable_and_normalised() -> None:
    p = softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]]))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[1], 1 / 3)


def test_ece_near_zero_when_calibrated_and_positive_when_overconfident() -> None:
    z, y = _calibrated(20_000)
    assert expected_calibration_error(softmax(z), y) < 0.015
    assert expected_calibration_error(softmax(3 * z), y) > 0.1


def test_ece_by_hand() -> None:
    # two samples at confidence .85 (one right) and one at .55 (right), 10 bins:
    # bin (.8,.9]: |.5 - .85| * 2/3; bin (.5,.6]: |1 - .55| * 1/3 -> (0.7 + 0.45) / 3
    probs = np.array([[0.85, 0.15], [0.85, 0.15], [0.45, 0.55]])
    y = np.array([0, 1, 1])
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(1.15 / 3)
    bins = reliability_bins(probs, y, n_bins=10)
    assert [b.count for b in bins] == [0, 0, 0, 0, 0, 1, 0, 0, 2, 0]
    assert (bins[8].lower, bins[8].upper) == pytest.approx((0.8, 0.9))
    assert bins[8].confidence == pytest.approx(0.85)
    assert bins[8].accuracy == pytest.approx(0.5)
    assert bins[0].confidence is None


def test_nll_and_brier_match_sklearn() -> None:
    z, y = _calibrated(500, k=4, seed=3)
    probs = softmax(z)
    assert negative_log_likelihood(probs, y) == pytest.approx(log_loss(y, probs, labels=range(4)))
    assert brier_score(probs, y) == pytest.approx(
        brier_score_loss(y, probs, labels=range(4), scale_by_half=False)
    )


def test_brier_two_class_convention() -> None:
    rng = np.random.default_rng(1)
    p1 = rng.random(100)
    y = (rng.random(100) < p1).astype(int)
    two_class = np.c_[1 - p1, p1]
    assert binary_brier_score(y, p1) == pytest.approx(brier_score_loss(y, p1))
    assert brier_score(two_class, y) == pytest.approx(2 * brier_score_loss(y, p1))


def test_temperature_scaling_recovers_known_temperature_and_lowers_nll() -> None:
    z, y = _calibrated(6000, k=5, seed=2)
    overconfident = 3 * z
    temperature = fit_temperature(overconfident, y)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = negative_log_likelihood(softmax(overconfident), y)
    after = negative_log_likelihood(apply_temperature(overconfident, temperature), y)
    assert after < before - 0.1
    assert expected_calibration_error(apply_temperature(overconfident, temperature), y) < 0.03


def test_temperature_scaling_keeps_argmax() -> None:
    z, _ = _calibrated(100, seed=4)
    np.testing.assert_array_equal(apply_temperature(z, 2.5).argmax(axis=1), z.argmax(axis=1))


def test_fit_temperature_is_robust() -> None:
    y = np.array([0, 1, 2, 0])
    assert fit_temperature(np.zeros((4, 3)), y) == 1.0  # constant logits: nothing to scale
    separable = 5 * np.eye(3)[y]
    temperature = fit_temperature(separable, y)  # NLL keeps falling as T -> 0: must stop at the bound
    assert 0 < temperature < 1
    with pytest.raises(ValueError):
        fit_temperature(np.full((2, 2), np.nan), np.array([0, 1]))
    with pytest.raises(ValueError):
        apply_temperature(separable, 0.0)
