"""The two-sample tests of a drift check, and the multiple-testing correction over them.

SciPy supplies the tests (it is already installed with scikit-learn and is the reference
implementation people check against): the Kolmogorov-Smirnov test per image statistic,
Wasserstein distance for its effect size, chi-square with Cramér's V for the label mix.
Evidently and alibi-detect were considered: Evidently's presets report tabular columns
without a family-wise error guarantee and pull in a large dependency tree; alibi-detect's
MMD detector needs a TensorFlow or PyTorch backend of its own pinned versions for what is
~30 lines over a kernel matrix (:mod:`retina_core.drift.mmd`). Holm's step-down is four
lines; SciPy has only false-discovery control (``false_discovery_control``), and a check
that says "flagged" must bound the chance of a false flag, not the share of false ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def ks_test(reference: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """(KS statistic, p-value): sensitive to any change of distribution (shift, spread, shape)."""
    if np.ptp(np.r_[reference, new]) == 0:  # one value on both sides: nothing moved
        return 0.0, 1.0
    result = stats.ks_2samp(reference, new)
    return float(result.statistic), float(result.pvalue)


def standardised_shift(reference: np.ndarray, new: np.ndarray) -> float:
    """Earth mover's distance between the samples in reference standard deviations.

    Reads like Cohen's d for a pure shift (a batch 0.5 SD brighter scores 0.5) but also
    counts a change of spread or shape, which a mean difference misses (blur narrows the
    sharpness distribution without moving much of its mean).
    """
    scale = float(np.std(reference))
    distance = float(stats.wasserstein_distance(reference, new))
    if scale == 0:
        return 0.0 if distance == 0 else math.inf
    return distance / scale


def label_test(reference: Sequence[int], new: Sequence[int], num_classes: int) -> tuple[float, float, float]:
    """(chi-square, p-value, Cramér's V) of the class counts of two samples.

    Classes absent from both samples are dropped (they carry no evidence and would make the
    expected counts zero); with fewer than two classes left nothing can have moved.
    """
    table = np.array(
        [np.bincount(np.asarray(s, dtype=np.int64), minlength=num_classes) for s in (reference, new)]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0.0
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    return float(chi2), float(p), float(stats.contingency.association(table, method="cramer"))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values: reject where adjusted < alpha keeps the family-wise error at alpha.

    Valid under any dependence between the tests (the image statistics are correlated).
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def histogram(
    reference: np.ndarray, new: np.ndarray, bins: int = 20
) -> tuple[list[float], list[float], list[float]]:
    """Shared bin edges and the density of each sample: what the report's drift plots draw."""
    both = np.r_[reference, new]
    low, high = float(both.min()), float(both.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    ref, _ = np.histogram(reference, edges, density=True)
    cur, _ = np.histogram(new, edges, density=True)
    return edges.tolist(), ref.tolist(), cur.tolist()
