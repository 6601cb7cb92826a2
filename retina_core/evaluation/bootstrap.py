"""Patient-level (cluster) bootstrap confidence intervals.

Images of one patient are correlated, so resampling images pretends there is more
independent evidence than there is and gives intervals that are too narrow. We resample
*patients* with replacement and take all rows of each sampled patient, then report the
percentile interval. Every metric is re-evaluated on the same resamples (same seed), so
intervals of different metrics, and of two models, are comparable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_MAX_INDEX_CELLS = 20_000_000
"""Row indices built at once (160 MB as int64); larger jobs are built in chunks of resamples."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval; ``nan`` where the metric is undefined."""

    value: float
    low: float
    high: float
    n_units: int
    """Independent units resampled (patients)."""
    n_dropped: int = 0
    """Resamples where the metric was undefined (e.g. one class only) and that were left out."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class _Draws:
    """Patients drawn with replacement, in chunks: the one place resamples are drawn.

    :func:`resample_rows` and :func:`resample_weights` read the same draws, so for a given
    seed they describe the very same resamples (same chunks, same generator calls).
    """

    counts: np.ndarray
    """Rows per patient."""
    inverse: np.ndarray
    """Row -> patient index."""
    chunks: Iterator[np.ndarray]
    """(resamples, patients) arrays of drawn patient indices."""


def _draws(groups: np.ndarray, n_boot: int, seed: int) -> _Draws:
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    n_groups, n_rows = counts.size, inverse.size
    chunk = max(1, _MAX_INDEX_CELLS // max(n_rows, 1))

    def chunks() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        for first in range(0, n_boot, chunk):
            yield rng.integers(0, n_groups, size=(min(chunk, n_boot - first), n_groups))

    return _Draws(counts, inverse, chunks())


def resample_rows(groups: np.ndarray, n_boot: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Row indices of ``n_boot`` cluster resamples: patients drawn with replacement, all their rows.

    The index arrays are built with numpy in chunks (no Python loop over patients), so the
    cost of a bootstrap is the metric itself.
    """
    draws = _draws(groups, n_boot, seed)
    counts = draws.counts
    rows_by_group = np.argsort(draws.inverse, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    for drawn in draws.chunks:
        size, n_groups = drawn.shape
        drawn = drawn.ravel()
        lengths = counts[drawn]
        total = int(lengths.sum())
        # position within the concatenation = start of the drawn group + offset inside it
        run_starts = np.cumsum(lengths) - lengths
        positions = np.repeat(starts[drawn] - run_starts, lengths) + np.arange(total)
        rows = rows_by_group[positions]
        per_resample = lengths.reshape(size, n_groups).sum(axis=1)
        yield from np.split(rows, np.cumsum(per_resample)[:-1])


def resample_weights(groups: np.ndarray, n_boot: int, seed: int = 0) -> Iterator[np.ndarray]:
    """The resamples of :func:`resample_rows` as row multiplicities: chunks of (resamples, rows).

    A resample is a multiset of rows, so any metric that is a weighted sum over rows (rates,
    means, the Mann-Whitney AUC) can be computed for a whole chunk of resamples at once with
    matrix products instead of one Python call per resample.
    """
    draws = _draws(groups, n_boot, seed)
    for drawn in draws.chunks:
        size, n_groups = drawn.shape
        flat = (drawn + n_groups * np.arange(size)[:, None]).ravel()
        times = np.bincount(flat, minlength=size * n_groups).reshape(size, n_groups)
        yield times[:, draws.inverse].astype(np.float64)


def _percentile_estimate(
    value: float, samples: np.ndarray, n_units: int, alpha: float, name: str
) -> Estimate:
    valid = samples[np.isfinite(samples)]
    dropped = samples.size - valid.size
    if dropped:
        logger.info("%s: %d of %d resamples undefined and dropped", name, dropped, samples.size)
    if not math.isfinite(value) or valid.size == 0:
        return Estimate(float(value), math.nan, math.nan, n_units, dropped)
    low, high = np.percentile(valid, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Estimate(float(value), float(low), float(high), n_units, dropped)


def bootstrap_many(
    statistic: Callable[..., Mapping[str, float]],
    *arrays: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Estimate]:
    """Intervals for several metrics at once: ``statistic`` returns a dict of named floats.

    Cheaper than one :func:`bootstrap_ci` per metric when the metrics share work (one
    confusion matrix per resample). ``groups=None`` treats every row as its own unit.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    _, groups = _check(arrays, groups, alpha)
    point = dict(statistic(*arrays))
    samples = {name: np.empty(n_boot) for name in point}
    for b, rows in enumerate(resample_rows(groups, n_boot, seed)):
        values = statistic(*(a[rows] for a in arrays))
        for name in point:
            samples[name][b] = values[name]
    n_units = int(np.unique(groups).size)
    return {
        name: _percentile_estimate(float(point[name]), samples[name], n_units, alpha, name) for name in point
    }


def bootstrap_weighted(
    statistic: Callable[..., Mapping[str, np.ndarray]],
    *arrays: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Estimate]:
    """:func:`bootstrap_many` for statistics that take row weights: the same resamples, vectorised.

    ``statistic(weights, *arrays)`` gets a (resamples, rows) matrix of row multiplicities and
    returns one array of values per metric. The point estimate is the statistic with every
    weight 1. For the same seed the intervals equal :func:`bootstrap_many`'s (up to float
    rounding), at a fraction of the cost, which matters when a report bootstraps a dozen rows.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n, groups = _check(arrays, groups, alpha)
    point = {name: float(v[0]) for name, v in statistic(np.ones((1, n)), *arrays).items()}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in point}
    for weights in resample_weights(groups, n_boot, seed):
        values = statistic(weights, *arrays)
        for name in point:
            parts[name].append(np.asarray(values[name], dtype=np.float64))
    n_units = int(np.unique(groups).size)
    return {
        name: _percentile_estimate(point[name], np.concatenate(parts[name]), n_units, alpha, name)
        for name in point
    }


def _check(arrays: tuple[np.ndarray, ...], groups: np.ndarray | None, alpha: float) -> tuple[int, np.ndarray]:
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("all arrays must have the same length")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} rows, the arrays {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return n, groups


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: np.ndarray,
    groups: np.ndarray | None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """Point value and percentile ``1 - alpha`` interval of ``metric(*arrays)`` over patient resamples.

    Resamples where the metric is ``nan`` (undefined, e.g. an AUC with one class) are dropped
    and counted in ``Estimate.n_dropped``.
    """
    result = bootstrap_many(
        lambda *a: {"value": metric(*a)}, *arrays, groups=groups, n_boot=n_boot, seed=seed, alpha=alpha
    )
    return result["value"]


def paired_bootstrap_diff(
    metric: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    y_true: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    groups: np.ndarray | None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate:
    """``metric(A) - metric(B)`` on the same items, both evaluated on each resample.

    Pairing removes the between-sample noise the two models share, so the interval is much
    tighter than comparing two separate intervals; an interval excluding 0 shows A differs
    from B. ``metric(y, score, weights)`` scores every resample at once (e.g.
    :func:`~retina_core.evaluation.metrics.weighted_roc_auc`).
    """

    def diff(w: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        return {"value": metric(y, a, w) - metric(y, b, w)}

    result = bootstrap_weighted(
        diff, y_true, score_a, score_b, groups=groups, n_boot=n_boot, seed=seed, alpha=alpha
    )
    return result["value"]
