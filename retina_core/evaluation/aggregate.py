"""From image-level predictions to one prediction per patient.

A clinician refers *patients*, not images, and Kermany has many B-scans per patient, so
we also report patient-level metrics. A patient's true label is their **most severe**
label: a patient with one diseased scan among healthy ones is a diseased patient (the
referral decision is driven by the worst finding), and it keeps the label consistent
with ``max`` aggregation of the predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Aggregation = Literal["mean", "max"]


def worst_label(
    labels: np.ndarray, inverse: np.ndarray, n_groups: int, severity: Sequence[int]
) -> np.ndarray:
    """The most severe label per group; ``severity`` lists the classes from least to most severe."""
    order = np.asarray(severity, dtype=np.int64)
    rank_of = np.empty(order.size, dtype=np.int64)
    rank_of[order] = np.arange(order.size)
    worst = np.full(n_groups, -1, dtype=np.int64)
    np.maximum.at(worst, inverse, rank_of[np.asarray(labels, dtype=np.int64)])
    return order[worst]


def aggregate_by_patient(
    patient_ids: np.ndarray,
    probs: np.ndarray,
    y_true: np.ndarray,
    how: Aggregation = "mean",
    *,
    normal_class: int = 0,
    severity: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per patient: ``(patient_ids_unique, probs_agg, y_true_agg)``, ids sorted.

    ``mean`` averages the class-probability vectors (a consensus over scans); ``max`` keeps
    the scan with the highest disease probability ``1 - P(normal_class)`` (a patient is as
    sick as their sickest scan). ``severity`` orders the classes from least to most severe
    for the true label; by default the class index (right for DR grades, not for OCT).
    """
    ids = np.asarray(patient_ids)
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    if p.ndim != 2 or not (len(ids) == len(p) == len(y)):
        raise ValueError(
            f"expected ids (n,), probs (n, K), y_true (n,); got {ids.shape}, {p.shape}, {y.shape}"
        )
    num_classes = p.shape[1]
    severity = tuple(range(num_classes)) if severity is None else tuple(severity)
    if sorted(severity) != list(range(num_classes)):
        raise ValueError(f"severity must be a permutation of 0..{num_classes - 1}, got {severity}")
    unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    if how == "mean":
        agg = np.zeros((unique.size, num_classes))
        np.add.at(agg, inverse, p)
        agg /= counts[:, None]
    elif how == "max":
        disease = 1.0 - p[:, normal_class]
        # sort by (patient, disease); the last row of each patient's run is their sickest scan
        order = np.lexsort((disease, inverse))
        last = np.cumsum(counts) - 1
        agg = p[order[last]]
    else:
        raise ValueError(f"how must be 'mean' or 'max', got {how!r}")
    return unique, agg, worst_label(y, inverse, unique.size, severity)
