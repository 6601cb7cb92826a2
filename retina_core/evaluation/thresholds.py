"""Fundus grading as regression: one score per image, cut into grades by optimised thresholds.

The top APTOS 2019 solutions trained a single regression output and chose the grade
thresholds that maximise quadratic weighted kappa, because QWK rewards getting *close*
and a regressor's score carries the order of the grades. Thresholds are fitted on the
**validation** split and then applied unchanged to the test split.

To report calibration and AUCs for such a model we turn scores into grade probabilities
with a cumulative-logit (proportional-odds) model whose cut points are the thresholds:
``P(grade <= k | s) = sigmoid((t_k - s) / scale)``, with only ``scale`` fitted by maximum
likelihood on validation data. Every ``P(grade >= k)`` rises with the score, so AUCs are
those of the raw score; but the arg-max of these probabilities need not equal the
thresholded grade, so pass the thresholded grades as the predictions.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit

from retina_core.evaluation.metrics import quadratic_weighted_kappa

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 256
"""Candidate positions tried per threshold and round; keeps the search O(rounds x K x 256 x n)."""


def apply_thresholds(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Grade = number of thresholds the score reaches (``score >= t`` counts)."""
    t = np.asarray(thresholds, dtype=np.float64)
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"thresholds must be strictly increasing, got {t}")
    return np.searchsorted(t, np.asarray(scores, dtype=np.float64), side="right").astype(np.int64)


def _candidates(sorted_scores: np.ndarray, low: float, high: float) -> np.ndarray:
    """Midpoints between consecutive distinct scores in (low, high): the only places QWK can change."""
    mids = (sorted_scores[:-1] + sorted_scores[1:]) / 2.0
    mids = mids[(mids > low) & (mids < high) & (sorted_scores[:-1] < sorted_scores[1:])]
    if mids.size > MAX_CANDIDATES:
        mids = mids[np.linspace(0, mids.size - 1, MAX_CANDIDATES).round().astype(int)]
    return mids


def optimise_thresholds(
    y_true: np.ndarray, scores: np.ndarray, num_classes: int = 5, max_rounds: int = 20
) -> np.ndarray:
    """Coordinate search for the ``num_classes - 1`` thresholds maximising QWK.

    Starts at ``[0.5, 1.5, ...]`` (plain rounding), then moves one threshold at a time to
    its best position between its neighbours, until a round changes nothing. A threshold
    only moves on a strict gain, so the result never scores below rounding and is deterministic.
    """
    y = np.asarray(y_true, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    thresholds = np.arange(num_classes - 1, dtype=np.float64) + 0.5
    sorted_scores = np.unique(s)
    best = quadratic_weighted_kappa(y, apply_thresholds(s, thresholds), num_classes)
    if np.isnan(best):
        logger.warning("QWK undefined at the initial thresholds; keeping them")
        return thresholds
    for round_ in range(max_rounds):
        moved = False
        for i in range(thresholds.size):
            low = thresholds[i - 1] if i > 0 else -np.inf
            high = thresholds[i + 1] if i + 1 < thresholds.size else np.inf
            for candidate in _candidates(sorted_scores, low, high):
                trial = thresholds.copy()
                trial[i] = candidate
                kappa = quadratic_weighted_kappa(y, apply_thresholds(s, trial), num_classes)
                if kappa > best + 1e-12:
                    best, thresholds, moved = kappa, trial, True
        if not moved:
            logger.debug("thresholds converged after %d rounds, QWK %.4f", round_ + 1, best)
            break
    return thresholds


def regression_scores_to_probs(scores: np.ndarray, thresholds: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Grade probabilities from the cumulative-logit model with cut points ``thresholds``."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    t = np.asarray(thresholds, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)[:, None]
    cumulative = np.concatenate([expit((t[None, :] - s) / scale), np.ones((s.shape[0], 1))], axis=1)
    probs = np.diff(cumulative, axis=1, prepend=0.0)
    return np.clip(probs, 0.0, 1.0)


def fit_ordinal_scale(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> float:
    """Maximum-likelihood ``scale`` for :func:`regression_scores_to_probs`; fit on validation data."""
    y = np.asarray(y_true, dtype=np.int64)
    rows = np.arange(y.size)

    def nll(log_scale: float) -> float:
        p = regression_scores_to_probs(scores, thresholds, float(np.exp(log_scale)))[rows, y]
        return float(-np.mean(np.log(np.clip(p, 1e-15, 1.0))))

    result = minimize_scalar(nll, bounds=(np.log(1e-3), np.log(1e2)), method="bounded")
    return float(np.exp(result.x))
