from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from retina_core.evaluation.metrics import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    macro_f1,
    ovr_roc_auc,
    per_class_precision_recall_f1,
    quadratic_weighted_kappa,
    roc_auc_binary,
    roc_curve_points,
    sensitivity_specificity,
    weighted_roc_auc,
)

K = 5


def _labels(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    # a noisy predictor, mostly near the truth, so kappa is well away from 0
    p = np.clip(y + rng.integers(-1, 2, n) * (rng.random(n) < 0.4), 0, K - 1)
    return y, p


def _degenerate() -> list[tuple[np.ndarray, np.ndarray]]:
    """A class never predicted; a class absent from the truth; a class absent from both."""
    y, p = _labels(99)
    never_predicted = (y, np.where(p == 2, 1, p))
    absent_in_truth = (np.where(y == 4, 3, y), p)
    absent_in_both = (np.where(y == 4, 3, y), np.where(p == 4, 3, p))
    return [never_predicted, absent_in_truth, absent_in_both]


CASES = [_labels(seed) for seed in range(4)] + _degenerate()


@pytest.mark.parametrize(("y", "p"), CASES)
def test_label_metrics_match_sklearn(y: np.ndarray, p: np.ndarray) -> None:
    labels = list(range(K))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_ba = skm.balanced_accuracy_score(y, p)
    np.testing.assert_array_equal(confusion_matrix(y, p, K), skm.confusion_matrix(y, p, labels=labels))
    assert accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))
    assert balanced_accuracy(y, p, K) == pytest.approx(expected_ba)
    assert macro_f1(y, p, K) == pytest.approx(
        skm.f1_score(y, p, average="macro", labels=labels, zero_division=0)
    )
    assert quadratic_weighted_kappa(y, p, K) == pytest.approx(
        skm.cohen_kappa_score(y, p, weights="quadratic", labels=labels)
    )
    table = per_class_precision_recall_f1(y, p, K)
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    for k in range(K):
        assert table[k]["precision"] == pytest.approx(precision[k])
        assert table[k]["recall"] == pytest.approx(recall[k])
        assert table[k]["f1"] == pytest.approx(f1[k])
        assert table[k]["support"] == support[k]


def test_macro_f1_counts_a_class_absent_from_both_as_zero() -> None:
    y, p = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    # class 0: P=1, R=.5, F1=2/3; class 1: P=2/3, R=1, F1=.8; class 2 absent: 0 -> mean 1.4667/3
    assert macro_f1(y, p, 3) == pytest.approx((2 / 3 + 0.8 + 0) / 3)


def test_kappa_by_hand_2x2() -> None:
    # y = [0,0,1,1], p = [0,1,1,1]: O = [[1,1],[0,2]], row sums (2,2), column sums (1,3), n = 4
    # E = outer((2,2),(1,3))/4 = [[.5,1.5],[.5,1.5]]; weights (K=2) off-diagonal 1
    # kappa = 1 - (O01 + O10) / (E01 + E10) = 1 - 1 / 2 = 0.5
    assert quadratic_weighted_kappa(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2) == pytest.approx(0.5)


def test_kappa_undefined_and_perfect() -> None:
    assert math.isnan(quadratic_weighted_kappa(np.ones(5, int), np.ones(5, int), K))
    y = np.arange(K)
    assert quadratic_weighted_kappa(y, y, K) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(4))
def test_binary_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    score = np.round(y * 0.3 + rng.random(300), 1)  # rounding makes many ties
    assert roc_auc_binary(y, score) == pytest.approx(skm.roc_auc_score(y, score))


def test_binary_auc_by_hand_and_undefined() -> None:
    # positives 0.8, 0.5; negatives 0.5, 0.1: pairs (.8>.5)(.8>.1)(.5=.5 -> 1/2)(.5>.1) = 3.5 / 4
    assert roc_auc_binary(np.array([1, 1, 0, 0]), np.array([0.8, 0.5, 0.5, 0.1])) == pytest.approx(0.875)
    assert math.isnan(roc_auc_binary(np.ones(4), np.arange(4.0)))


@pytest.mark.parametrize("seed", range(3))
def test_weighted_auc_is_the_auc_of_the_repeated_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 80)
    score = np.round(y * 0.3 + rng.random(80), 1)
    weights = rng.integers(0, 4, size=(5, 80))
    expected = [roc_auc_binary(np.repeat(y, w), np.repeat(score, w)) for w in weights]
    assert weighted_roc_auc(y, score, weights) == pytest.approx(expected)
    only_negatives = np.where(y == 0, 1, 0)[None, :]
    assert math.isnan(weighted_roc_auc(y, score, only_negatives)[0])


@pytest.mark.parametrize("seed", range(3))
def test_ovr_auc_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 250)
    logits = rng.normal(size=(250, 4)) + 1.5 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert ovr_roc_auc(y, probs) == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))


def test_ovr_auc_skips_classes_absent_from_truth() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 200)  # class 3 never occurs
    probs = rng.dirichlet(np.ones(4), 200)
    expected = np.mean([skm.roc_auc_score(y == k, probs[:, k]) for k in range(3)])
    assert ovr_roc_auc(y, probs) == pytest.approx(expected)
    assert math.isnan(ovr_roc_auc(np.zeros(10, int), probs[:10]))


@pytest.mark.parametrize("seed", range(3))
def test_roc_curve_points_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 120)
    score = np.round(rng.random(120) + 0.4 * y, 2)
    fpr, tpr, thresholds = roc_curve_points(y, score)
    ref_fpr, ref_tpr, ref_thr = skm.roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_allclose(thresholds[1:], ref_thr[1:])
    assert np.isinf(thresholds[0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_binary(y, score))


def test_sensitivity_specificity() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([1, 1, 1, 0, 0, 0, 0, 1, 1])
    sens, spec = sensitivity_specificity(y, p)
    assert (sens, spec) == pytest.approx((3 / 4, 3 / 5))
    assert sens == pytest.approx(skm.recall_score(y, p))
    sens_only, spec_none = sensitivity_specificity(np.ones(3), np.array([1, 0, 1]))
    assert sens_only == pytest.approx(2 / 3)
    assert math.isnan(spec_none)


def test_rejects_labels_out_of_range() -> None:
    with pytest.raises(ValueError, match="labels must lie"):
        confusion_matrix(np.array([0, 5]), np.array([0, 1]), K)
