"""The retrain policy and the champion watch: pure functions, checked on known inputs."""

from __future__ import annotations

import numpy as np
import pytest

from retina_core.drift.policy import DEGRADED, DRIFT, MANUAL, NEW_IMAGES, decide_retrain
from retina_core.drift.watch import difference, watch_champion
from retina_core.evaluation.bootstrap import Estimate, bootstrap_ci
from retina_core.evaluation.metrics import quadratic_weighted_kappa


def test_drift_fires_a_retrain_below_min_new_images() -> None:
    decision = decide_retrain(12, 50, drifted=True, drift_summary="fundus: drift in sharpness")
    assert decision.retrain and decision.rules == [DRIFT]
    assert "drift" in decision.reason and "fundus: drift in sharpness" in decision.reason


def test_each_rule_is_named_and_nothing_fires_on_a_small_unshifted_batch() -> None:
    assert decide_retrain(60, 50).rules == [NEW_IMAGES]
    assert decide_retrain(3, 50, champion_degraded=True).rules == [DEGRADED]
    assert decide_retrain(60, 50, drifted=True, champion_degraded=True).rules == [NEW_IMAGES, DRIFT, DEGRADED]
    quiet = decide_retrain(12, 50)
    assert not quiet.retrain and quiet.rules == [] and "12 new images < min_new_images 50" in quiet.reason
    assert decide_retrain(None, 50).rules == [MANUAL]


def _grades(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(5, n, p=[0.5, 0.1, 0.25, 0.05, 0.1])


def _champion(rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
    """A grader right 85% of the time and one grade off otherwise."""
    return np.where(rng.uniform(size=y.size) < 0.85, y, np.clip(y + rng.choice([-1, 1], y.size), 0, 4))


def test_a_degraded_champion_is_detected_and_a_steady_one_is_not() -> None:
    rng = np.random.default_rng(0)
    test_split = _grades(rng, 200)  # the champion's registered figure comes from its own test split
    registered = bootstrap_ci(
        lambda t, p: quadratic_weighted_kappa(t, p, 5), test_split, _champion(rng, test_split), groups=None
    )
    y = _grades(rng, 300)
    patients = np.arange(300).astype(str)
    good = _champion(rng, y)
    steady = watch_champion(
        "fundus_cnn v1", "qwk", 5, y, good, patients, registered, margin=0.05, n_boot=200, seed=0
    )
    assert not steady.degraded and steady.difference.low < 0 < steady.difference.high
    worse = np.where(rng.uniform(size=300) < 0.45, y, rng.integers(0, 5, 300))  # another clinic's photos
    degraded = watch_champion(
        "fundus_cnn v1", "qwk", 5, y, worse, patients, registered, margin=0.05, n_boot=200, seed=0
    )
    assert degraded.degraded and degraded.difference.high < 0 and "beyond the margin" in degraded.reason


def test_the_difference_interval_combines_both_uncertainties() -> None:
    diff = difference(Estimate(0.70, 0.60, 0.78, 50), Estimate(0.80, 0.74, 0.85, 80))
    assert diff.value == pytest.approx(-0.10)
    assert diff.low == pytest.approx(-0.10 - np.hypot(0.10, 0.05))
    assert diff.high == pytest.approx(-0.10 + np.hypot(0.08, 0.06))
