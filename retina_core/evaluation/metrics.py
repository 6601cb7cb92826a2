"""Classification metrics as small pure functions over numpy arrays.

Labels are integers ``0..K-1``. Every function returns a plain ``float`` (or numpy
arrays) and returns ``nan`` where a metric is undefined on the data given (one class
only, no positives) rather than inventing a value: the bootstrap drops such resamples
and counts them. Conventions match scikit-learn where one exists, so the numbers can be
checked against it (the tests do).
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np


class ClassScores(TypedDict):
    precision: float
    recall: float
    f1: float
    support: int


def _labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    y = y.astype(np.int64, copy=False)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return y


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ratio with 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with true labels in rows and predictions in columns; every other metric reads it."""
    t, p = _labels(y_true, num_classes), _labels(y_pred, num_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape} vs {p.shape}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction correct: easy to read, misleading under class imbalance, so never reported alone."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(t == p)) if t.size else float("nan")


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> float:
    """Mean recall over the classes present in ``y_true`` (as scikit-learn): robust to imbalance."""
    k = num_classes if num_classes is not None else int(max(np.max(y_true), np.max(y_pred))) + 1
    return balanced_accuracy_from_confusion(confusion_matrix(y_true, y_pred, k))


def balanced_accuracy_from_confusion(cm: np.ndarray) -> float:
    """:func:`balanced_accuracy` of a confusion matrix (the bootstrap computes one per resample)."""
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def precision_recall_f1_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 vectors, 0 where undefined (``zero_division=0``)."""
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    return _safe_div(tp, predicted), _safe_div(tp, actual), _safe_div(2 * tp, predicted + actual)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean F1 over all ``num_classes`` classes: the primary metric for nominal labels.

    Matches ``f1_score(average="macro", labels=range(K), zero_division=0)``: a class absent
    from both ``y_true`` and ``y_pred`` is *not* excluded, it counts as F1 = 0. This keeps the
    denominator fixed at K so scores are comparable across test sets, and penalises a model
    evaluated on data that cannot show whether it recognises a class.
    """
    return float(
        np.mean(precision_recall_f1_from_confusion(confusion_matrix(y_true, y_pred, num_classes))[2])
    )


def per_class_precision_recall_f1(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
) -> dict[int, ClassScores]:
    """Per-class table for the report; 0 where undefined (``zero_division=0``), with support."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    precision, recall, f1 = precision_recall_f1_from_confusion(cm)
    support = cm.sum(axis=1)
    return {
        k: ClassScores(
            precision=float(precision[k]), recall=float(recall[k]), f1=float(f1[k]), support=int(support[k])
        )
        for k in range(num_classes)
    }


def kappa_from_confusion(cm: np.ndarray) -> float:
    """Quadratic weighted kappa of a confusion matrix (the bootstrap computes one per resample)."""
    k = cm.shape[0]
    n = cm.sum()
    if n == 0 or k < 2:
        return float("nan")
    idx = np.arange(k, dtype=np.float64)
    weights = (idx[:, None] - idx[None, :]) ** 2
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / n
    denominator = float(np.sum(weights * expected))
    if denominator == 0:
        return float("nan")
    return float(1.0 - np.sum(weights * cm) / denominator)


def quadratic_weighted_kappa(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Agreement beyond chance that punishes far-off grades more: the APTOS 2019 primary metric.

    Matches ``cohen_kappa_score(weights="quadratic", labels=range(K))``; the weights use the
    grade distance over all K grades, not only the grades seen. ``nan`` when undefined (e.g.
    truth and prediction share a single grade).
    """
    return kappa_from_confusion(confusion_matrix(y_true, y_pred, num_classes))


def roc_auc_binary(y_true01: np.ndarray, score: np.ndarray) -> float:
    """Threshold-free discrimination: P(score of a positive > score of a negative), ties count half.

    Computed as the Mann-Whitney U statistic from mid-ranks; ``nan`` when only one class is present.
    """
    y = np.asarray(y_true01).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"y_true01 and score differ in shape: {y.shape} vs {s.shape}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # mid-ranks by hand: scipy's rankdata has a large per-call overhead, and the bootstrap calls this often
    order = np.argsort(s)
    s_sorted = s[order]
    new_value = np.empty(s.size, dtype=bool)
    new_value[0] = True
    np.not_equal(s_sorted[1:], s_sorted[:-1], out=new_value[1:])
    starts = np.flatnonzero(new_value)
    ends = np.append(starts[1:], s.size)
    mid_rank = ((starts + 1 + ends) / 2.0)[np.cumsum(new_value) - 1]
    return float((mid_rank[y[order]].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def weighted_roc_auc(y_true01: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`roc_auc_binary` for each row of ``weights`` (B, N): row multiplicities of a resample.

    The Mann-Whitney count with weights: each positive scores the weight of the negatives
    below it plus half of those tied with it. Scores are sorted once for all B rows, so a
    whole bootstrap is a few array operations. ``nan`` where a row weighs one class only.
    """
    y = np.asarray(y_true01).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if y.shape != s.shape or w.shape[1] != y.size:
        raise ValueError(f"y_true01 {y.shape}, score {s.shape} and weights {w.shape} do not align")
    if y.size == 0:
        return np.full(w.shape[0], np.nan)
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tie_starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    w_sorted = w[:, order]
    pos = np.add.reduceat(w_sorted * y_sorted, tie_starts, axis=1)  # (B, distinct scores)
    neg = np.add.reduceat(w_sorted * ~y_sorted, tie_starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    wins = np.sum(pos * (below + 0.5 * neg), axis=1)
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1.0), np.nan)


def ovr_roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest AUC over the classes present in ``y_true`` (others have no positives).

    ``nan`` when fewer than two classes are present.
    """
    y = _labels(y_true, probs.shape[1])
    aucs = [roc_auc_binary(y == k, probs[:, k]) for k in np.unique(y)]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def roc_curve_points(y_true01: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ROC operating point (fpr, tpr, threshold), for plots and threshold choice.

    A point predicts positive when ``score >= threshold``; the first point has threshold
    ``inf`` (nothing positive), as ``sklearn.metrics.roc_curve(drop_intermediate=False)``.
    """
    y = np.asarray(y_true01).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), y.size - 1] if y.size else np.array([], int)
    tps = np.cumsum(y_sorted)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tpr = np.r_[0.0, tps / n_pos] if n_pos else np.full(tps.size + 1, np.nan)
    fpr = np.r_[0.0, fps / n_neg] if n_neg else np.full(fps.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s_sorted[last_of_tie]]


def sensitivity_specificity(y_true01: np.ndarray, y_pred01: np.ndarray) -> tuple[float, float]:
    """The screening pair a clinician asks for first; each ``nan`` when its denominator is empty."""
    y = np.asarray(y_true01).astype(bool)
    p = np.asarray(y_pred01).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    sens = float((y & p).sum() / n_pos) if n_pos else float("nan")
    spec = float((~y & ~p).sum() / n_neg) if n_neg else float("nan")
    return sens, spec
