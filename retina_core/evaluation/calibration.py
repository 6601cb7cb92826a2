"""Calibration: do the model's probabilities mean what they say, and temperature scaling to fix them.

A screening model's probability is read as a risk, so it must be calibrated, not only
discriminative. Temperature scaling (Guo et al., 2017) divides the logits by one scalar
``T`` fitted on validation data; it never changes the arg-max, so accuracy is untouched.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

logger = logging.getLogger(__name__)

_EPS = 1e-15
T_BOUNDS = (0.02, 50.0)
"""Search range for the temperature: wide enough for any real network, finite so it always converges."""


@dataclass(frozen=True)
class ReliabilityBin:
    """One bar of a reliability diagram; ``confidence``/``accuracy`` are ``None`` for an empty bin."""

    lower: float
    upper: float
    count: int
    confidence: float | None
    accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64), axis=-1))


def _check(probs: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true).astype(np.int64)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise ValueError(f"expected probs (n, K) and y_true (n,), got {p.shape} and {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in 0..{p.shape[1] - 1}")
    return p, y


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin ``i`` holds ``edges[i] < c <= edges[i+1]`` (bin 0 also holds ``c == 0``)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], confidence, side="left")


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> list[ReliabilityBin]:
    """Top-label confidence vs accuracy in equal-width bins: the data of a reliability diagram."""
    p, y = _check(probs, y_true)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = _bin_index(confidence, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return [
        ReliabilityBin(
            lower=float(edges[i]),
            upper=float(edges[i + 1]),
            count=int(counts[i]),
            confidence=float(conf_sum[i] / counts[i]) if counts[i] else None,
            accuracy=float(acc_sum[i] / counts[i]) if counts[i] else None,
        )
        for i in range(n_bins)
    ]


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: the count-weighted mean gap between confidence and accuracy per bin.

    The common summary of miscalibration (Guo et al.); equal-width bins, so it depends on
    ``n_bins`` and is biased upwards on small samples: compare values at the same n and bins.
    """
    p, y = _check(probs, y_true)
    if y.size == 0:
        return float("nan")
    gap = sum(b.count * abs(b.confidence - b.accuracy) for b in reliability_bins(p, y, n_bins) if b.count)
    return float(gap / y.size)


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean -log p(true class): the proper score temperature scaling minimises (probs clipped at 1e-15)."""
    p, y = _check(probs, y_true)
    if y.size == 0:
        return float("nan")
    return float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], _EPS, 1.0))))


def brier_score(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Multiclass Brier score: per sample the sum over classes of (p_k - 1[y = k])^2, then the mean.

    This is Brier's original definition, range [0, 2]. For two classes it is *twice* the
    binary Brier score ``mean((p_positive - y)^2)`` that ``sklearn.metrics.brier_score_loss``
    reports; use :func:`binary_brier_score` for that convention.
    """
    p, y = _check(probs, y_true)
    if y.size == 0:
        return float("nan")
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def binary_brier_score(y_true01: np.ndarray, score: np.ndarray) -> float:
    """Binary Brier score ``mean((p - y)^2)``, range [0, 1]: the convention screening papers use."""
    y = np.asarray(y_true01, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    return float(np.mean((s - y) ** 2)) if y.size else float("nan")


def _nll_of_logits(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    return float(-np.mean(log_softmax(logits / temperature, axis=1)[np.arange(y.size), y]))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature ``T`` minimising validation NLL of ``softmax(logits / T)``.

    Searched over ``log T`` (bounded Brent) within :data:`T_BOUNDS`, so it cannot diverge on
    separable data; returns 1.0 (no change) when scaling does not lower the NLL, e.g. for
    constant logits. Fit it on validation data only: fitting on the test set flatters ECE.
    """
    z = np.asarray(logits, dtype=np.float64)
    _, y = _check(z, y_true)
    if y.size == 0:
        raise ValueError("cannot fit a temperature on no samples")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain non-finite values")
    result = minimize_scalar(
        lambda log_t: _nll_of_logits(z, y, float(np.exp(log_t))),
        bounds=tuple(np.log(T_BOUNDS)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    temperature = float(np.exp(result.x))
    if not result.success or _nll_of_logits(z, y, temperature) >= _nll_of_logits(z, y, 1.0):
        logger.info("temperature scaling does not lower the NLL; keeping T = 1")
        return 1.0
    if np.isclose(temperature, T_BOUNDS, rtol=1e-3).any():
        # INFO, not WARNING: a temperature at the bound says the model is near chance (or
        # separates validation perfectly), which the report shows beside its T; no user
        # action follows from it, so it must not interrupt every demo run's terminal.
        logger.info("fitted temperature %.3g sits at the search bound %s", temperature, T_BOUNDS)
    logger.debug("fitted temperature %.4f on %d samples", temperature, y.size)
    return temperature


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return softmax(np.asarray(logits, dtype=np.float64) / temperature)
