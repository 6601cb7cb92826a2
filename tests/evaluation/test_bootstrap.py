from __future__ import annotations

import json
import math

import numpy as np
import pytest

from retina_core.evaluation.bootstrap import (
    Estimate,
    bootstrap_ci,
    bootstrap_many,
    bootstrap_weighted,
    paired_bootstrap_diff,
    resample_rows,
    resample_weights,
)
from retina_core.evaluation.metrics import accuracy, roc_auc_binary, weighted_roc_auc


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x))


def test_estimate_str_and_dict() -> None:
    est = Estimate(0.8123, 0.7741, 0.8512, 120)
    assert str(est) == "0.812 [0.774, 0.851]"
    assert json.loads(json.dumps(est.to_dict())) == {
        "value": 0.8123,
        "low": 0.7741,
        "high": 0.8512,
        "n_units": 120,
        "n_dropped": 0,
    }


def test_interval_covers_the_true_mean_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for seed in range(80):
        x = rng.normal(loc=2.0, size=100)
        est = bootstrap_ci(_mean, x, groups=None, n_boot=200, seed=seed)
        assert est.low < est.value < est.high
        covered += est.low <= 2.0 <= est.high
    assert 0.85 <= covered / 80 <= 1.0


def test_interval_contains_true_accuracy_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 1600):
        y = np.ones(n, dtype=int)
        pred = (rng.random(n) < 0.8).astype(int)  # true accuracy 0.8
        est = bootstrap_ci(accuracy, y, pred, groups=np.arange(n), n_boot=200, seed=0)
        assert est.low <= 0.8 <= est.high
        assert est.n_units == n
        widths.append(est.high - est.low)
    assert widths[1] < widths[0] / 2.5  # ~ 1/sqrt(16) = 1/4 in theory


def test_resamples_whole_patients() -> None:
    # 10 patients x 20 identical images: the evidence is 10 values, not 200
    rng = np.random.default_rng(2)
    patients = np.repeat(np.arange(10), 20)
    x = np.repeat(rng.normal(size=10), 20)
    by_patient = bootstrap_ci(_mean, x, groups=patients, n_boot=300, seed=0)
    by_image = bootstrap_ci(_mean, x, groups=None, n_boot=300, seed=0)
    assert by_patient.n_units == 10
    assert by_image.n_units == 200
    assert (by_patient.high - by_patient.low) > 3 * (by_image.high - by_image.low)
    for rows in resample_rows(patients, n_boot=50, seed=3):
        assert rows.size == 200  # equal-sized patients: same total
        counts = np.bincount(patients[rows], minlength=10)
        assert np.all(counts % 20 == 0)  # a drawn patient brings all 20 of their rows


def test_resample_rows_handles_unequal_patients_and_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import retina_core.evaluation.bootstrap as bootstrap

    monkeypatch.setattr(bootstrap, "_MAX_INDEX_CELLS", 50)  # force several chunks
    patients = np.array(["b", "a", "b", "c", "c", "c"])
    sizes = {"a": 1, "b": 2, "c": 3}
    resamples = list(resample_rows(patients, n_boot=40, seed=1))
    assert len(resamples) == 40
    for rows in resamples:
        drawn = patients[rows]
        drawn_counts = dict(zip(*np.unique(drawn, return_counts=True), strict=True))
        assert all(count % sizes[pid] == 0 for pid, count in drawn_counts.items())
        assert sum(count // sizes[pid] for pid, count in drawn_counts.items()) == 3  # 3 patients drawn


def test_undefined_resamples_are_dropped_and_counted() -> None:
    y = np.array([1] + [0] * 9)  # one positive patient: most resamples lack it
    score = np.linspace(1.0, 0.0, 10)
    est = bootstrap_ci(roc_auc_binary, y, score, groups=np.arange(10), n_boot=200, seed=0)
    assert est.value == 1.0
    assert 0 < est.n_dropped < 200
    assert est.low == est.high == 1.0
    nothing = bootstrap_ci(roc_auc_binary, np.zeros(5), np.arange(5.0), groups=None, n_boot=50)
    assert math.isnan(nothing.value) and math.isnan(nothing.low)


def test_paired_difference_detects_the_better_model() -> None:
    rng = np.random.default_rng(4)
    n = 300
    patients = np.repeat(np.arange(n // 3), 3)
    y = rng.integers(0, 2, n)
    good = y + rng.normal(scale=0.6, size=n)
    poor = y + rng.normal(scale=1.5, size=n)
    diff = paired_bootstrap_diff(weighted_roc_auc, y, good, poor, groups=patients, n_boot=200, seed=0)
    assert diff.value == pytest.approx(roc_auc_binary(y, good) - roc_auc_binary(y, poor))
    assert diff.low > 0
    same = paired_bootstrap_diff(weighted_roc_auc, y, good, good, groups=patients, n_boot=50)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)


def test_bootstrap_many_shares_resamples() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=50)
    both = bootstrap_many(lambda a: {"mean": _mean(a), "twice": 2 * _mean(a)}, x, n_boot=100, seed=7)
    assert both["twice"].low == pytest.approx(2 * both["mean"].low)
    assert both["mean"] == bootstrap_ci(_mean, x, groups=None, n_boot=100, seed=7)


def test_resample_weights_are_the_resamples_of_resample_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import retina_core.evaluation.bootstrap as bootstrap

    monkeypatch.setattr(bootstrap, "_MAX_INDEX_CELLS", 50)  # several chunks on both sides
    patients = np.array(["b", "a", "b", "c", "c", "c", "d"])
    rows = list(resample_rows(patients, n_boot=40, seed=3))
    weights = np.concatenate(list(resample_weights(patients, n_boot=40, seed=3)))
    assert weights.shape == (40, patients.size)
    for r, w in zip(rows, weights, strict=True):
        assert np.array_equal(np.bincount(r, minlength=patients.size), w)


def _clustered_scores(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(60), rng.integers(1, 4, 60))
    y = rng.random(patients.size) < 0.3
    good = np.round(y * 0.4 + rng.random(patients.size), 1)  # rounded: many ties
    poor = np.round(y * 0.1 + rng.random(patients.size), 1)
    return patients, y, good, poor


@pytest.mark.parametrize("seed", range(3))
def test_weighted_bootstrap_gives_the_intervals_of_the_row_bootstrap(seed: int) -> None:
    patients, y, good, _ = _clustered_scores(seed)
    rows = bootstrap_ci(roc_auc_binary, y, good, groups=patients, n_boot=300, seed=seed)
    weighted = bootstrap_weighted(
        lambda w, yy, ss: {"auc": weighted_roc_auc(yy, ss, w)},
        y,
        good,
        groups=patients,
        n_boot=300,
        seed=seed,
    )["auc"]
    assert weighted.value == pytest.approx(rows.value, abs=1e-12)
    assert (weighted.low, weighted.high) == pytest.approx((rows.low, rows.high), abs=1e-12)
    assert weighted.n_units == rows.n_units == 60


def test_paired_difference_matches_a_row_bootstrap_of_the_difference() -> None:
    patients, y, good, poor = _clustered_scores(7)
    rows = bootstrap_ci(
        lambda yy, a, b: roc_auc_binary(yy, a) - roc_auc_binary(yy, b),
        y,
        good,
        poor,
        groups=patients,
        n_boot=300,
        seed=1,
    )
    weighted = paired_bootstrap_diff(weighted_roc_auc, y, good, poor, groups=patients, n_boot=300, seed=1)
    assert (weighted.value, weighted.low, weighted.high) == pytest.approx((rows.value, rows.low, rows.high))
    assert weighted.low > 0


def test_weighted_bootstrap_drops_undefined_resamples_like_the_row_version() -> None:
    y = np.array([1] + [0] * 9)  # one positive patient: most resamples lack it
    score = np.linspace(1.0, 0.0, 10)
    rows = bootstrap_ci(roc_auc_binary, y, score, groups=np.arange(10), n_boot=200, seed=0)
    weighted = bootstrap_weighted(
        lambda w, yy, ss: {"auc": weighted_roc_auc(yy, ss, w)}, y, score, groups=np.arange(10), n_boot=200
    )["auc"]
    assert weighted == rows
    assert 0 < weighted.n_dropped < 200


def test_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        bootstrap_ci(_mean, np.arange(5.0), groups=np.arange(4))
