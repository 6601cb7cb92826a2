"""Every metric of one level (images or patients), each with a patient-level bootstrap CI.

All scalars are computed by one statistic from one confusion matrix and a few rank
AUCs, and evaluated on the same patient resamples, so the bootstrap costs about one
confusion matrix and ``K + 2`` sorts per resample.
"""

from __future__ import annotations

import numpy as np

from retina_core.evaluation.bootstrap import bootstrap_many
from retina_core.evaluation.metrics import (
    balanced_accuracy_from_confusion,
    confusion_matrix,
    kappa_from_confusion,
    ovr_roc_auc,
    precision_recall_f1_from_confusion,
    roc_auc_binary,
    roc_curve_points,
    sensitivity_specificity,
)
from retina_core.evaluation.result import ClassMetrics, LevelMetrics, RocCurve
from retina_core.evaluation.task_spec import TaskSpec

MAX_CURVE_POINTS = 200


def referable_score(task: TaskSpec, probs: np.ndarray) -> np.ndarray:
    """P(referable) = sum of the referable classes' probabilities."""
    return probs[:, list(task.referable_classes)].sum(axis=1)


def disease_score(task: TaskSpec, probs: np.ndarray) -> np.ndarray:
    """P(any disease) = 1 - P(normal)."""
    return 1.0 - probs[:, task.normal_class]


def level_statistics(
    task: TaskSpec, y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray
) -> dict[str, float]:
    """All scalar metrics of one (re)sample, by name; ``nan`` where undefined."""
    cm = confusion_matrix(y_true, y_pred, task.num_classes)
    n = cm.sum()
    precision, recall, f1 = precision_recall_f1_from_confusion(cm)
    referable = np.asarray(task.referable_classes)
    true_ref, pred_ref = np.isin(y_true, referable), np.isin(y_pred, referable)
    true_dis, pred_dis = y_true != task.normal_class, y_pred != task.normal_class
    stats = {
        "accuracy": float(np.trace(cm) / n) if n else float("nan"),
        "balanced_accuracy": balanced_accuracy_from_confusion(cm),
        "macro_f1": float(np.mean(f1)),
        "ovr_auc": ovr_roc_auc(y_true, probs),
        "referable_auc": roc_auc_binary(true_ref, referable_score(task, probs)),
        "disease_auc": roc_auc_binary(true_dis, disease_score(task, probs)),
    }
    if task.ordinal:
        stats["qwk"] = kappa_from_confusion(cm)
    stats["referable_sensitivity"], stats["referable_specificity"] = sensitivity_specificity(
        true_ref, pred_ref
    )
    stats["disease_sensitivity"], stats["disease_specificity"] = sensitivity_specificity(true_dis, pred_dis)
    for k in range(task.num_classes):
        stats[f"precision_{k}"], stats[f"recall_{k}"], stats[f"f1_{k}"] = precision[k], recall[k], f1[k]
    return stats


def roc_curve(y_true01: np.ndarray, score: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> RocCurve:
    """A plot-ready ROC: collinear points dropped, then at most ``max_points`` kept evenly.

    Empty when only one class is present (no curve exists).
    """
    y = np.asarray(y_true01).astype(bool)
    if y.all() or not y.any():
        return RocCurve(fpr=[], tpr=[], thresholds=[])
    fpr, tpr, thresholds = roc_curve_points(y, score)
    if fpr.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(fpr, 2) != 0, np.diff(tpr, 2) != 0), True]
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    if fpr.size > max_points:
        idx = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(int))
        fpr, tpr, thresholds = fpr[idx], tpr[idx], thresholds[idx]
    return RocCurve(
        fpr=fpr.tolist(),
        tpr=tpr.tolist(),
        thresholds=[float(t) if np.isfinite(t) else None for t in thresholds],
    )


def level_metrics(
    task: TaskSpec,
    y_true: np.ndarray,
    probs: np.ndarray,
    y_pred: np.ndarray,
    *,
    groups: np.ndarray | None,
    n_boot: int,
    seed: int,
) -> LevelMetrics:
    """The :class:`LevelMetrics` block; ``groups`` are patient ids (``None``: one row per patient)."""
    est = bootstrap_many(
        lambda y, p, yp: level_statistics(task, y, p, yp),
        y_true,
        probs,
        y_pred,
        groups=groups,
        n_boot=n_boot,
        seed=seed,
    )
    support = np.bincount(y_true, minlength=task.num_classes)
    per_class = [
        ClassMetrics(
            name=name,
            precision=est[f"precision_{k}"],
            recall=est[f"recall_{k}"],
            f1=est[f"f1_{k}"],
            support=int(support[k]),
        )
        for k, name in enumerate(task.label_names)
    ]
    n_patients = len(y_true) if groups is None else int(np.unique(groups).size)
    return LevelMetrics(
        n=len(y_true),
        n_patients=n_patients,
        accuracy=est["accuracy"],
        balanced_accuracy=est["balanced_accuracy"],
        macro_f1=est["macro_f1"],
        qwk=est.get("qwk"),
        ovr_auc=est["ovr_auc"],
        per_class=per_class,
        confusion_matrix=confusion_matrix(y_true, y_pred, task.num_classes).tolist(),
        referable_sensitivity=est["referable_sensitivity"],
        referable_specificity=est["referable_specificity"],
        referable_auc=est["referable_auc"],
        disease_sensitivity=est["disease_sensitivity"],
        disease_specificity=est["disease_specificity"],
        disease_auc=est["disease_auc"],
        disease_roc=roc_curve(y_true != task.normal_class, disease_score(task, probs)),
        referable_roc=roc_curve(np.isin(y_true, task.referable_classes), referable_score(task, probs)),
    )
