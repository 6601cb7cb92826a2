"""The evaluation entry points: predictions in, a JSON-ready result out. Still pure: no I/O.

Discrimination metrics use the probabilities as given (temperature scaling changes
neither the arg-max nor, for two classes, any ranking); calibration is reported before
and after a temperature fitted on the *validation* split, never on the evaluated data.
"""

from __future__ import annotations

import logging

import numpy as np

from retina_core.config import EvalSettings
from retina_core.evaluation.aggregate import aggregate_by_patient, worst_label
from retina_core.evaluation.bootstrap import bootstrap_weighted
from retina_core.evaluation.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)
from retina_core.evaluation.level import level_metrics, roc_curve
from retina_core.evaluation.metrics import roc_curve_points, weighted_roc_auc
from retina_core.evaluation.result import (
    BinaryResult,
    CalibrationMetrics,
    CalibrationReport,
    EvaluationResult,
)
from retina_core.evaluation.task_spec import TaskSpec

logger = logging.getLogger(__name__)


def _calibration_metrics(probs: np.ndarray, y_true: np.ndarray, n_bins: int) -> CalibrationMetrics:
    return CalibrationMetrics(
        ece=expected_calibration_error(probs, y_true, n_bins),
        nll=negative_log_likelihood(probs, y_true),
        brier=brier_score(probs, y_true),
        reliability=reliability_bins(probs, y_true, n_bins),
    )


def calibration_report(
    probs: np.ndarray,
    y_true: np.ndarray,
    *,
    logits: np.ndarray | None,
    val_logits: np.ndarray | None,
    val_y: np.ndarray | None,
    n_bins: int,
) -> CalibrationReport:
    """Calibration before and after temperature scaling.

    Without ``logits``, ``log(probs)`` stands in: softmax is shift-invariant, so scaling
    log-probabilities by ``1/T`` gives exactly ``softmax(logits / T)``.
    """
    before = _calibration_metrics(probs, y_true, n_bins)
    if val_logits is None or val_y is None:
        logger.info("no validation logits: calibration reported before temperature scaling only")
        return CalibrationReport(temperature=None, n_bins=n_bins, before=before, after=None)
    temperature = fit_temperature(val_logits, val_y)
    test_logits = logits if logits is not None else np.log(np.clip(probs, 1e-300, 1.0))
    after = _calibration_metrics(apply_temperature(test_logits, temperature), y_true, n_bins)
    return CalibrationReport(temperature=temperature, n_bins=n_bins, before=before, after=after)


def _check_inputs(task: TaskSpec, y_true: np.ndarray, probs: np.ndarray, patient_ids: np.ndarray) -> None:
    n = len(y_true)
    if probs.shape != (n, task.num_classes):
        raise ValueError(f"probs must have shape ({n}, {task.num_classes}), got {probs.shape}")
    if len(patient_ids) != n:
        raise ValueError(f"patient_ids has {len(patient_ids)} rows, y_true {n}")
    if n == 0:
        raise ValueError("nothing to evaluate")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4) or probs.min() < 0:
        raise ValueError("probs must be probability vectors (non-negative, rows summing to 1)")


def evaluate_predictions(
    task: TaskSpec,
    y_true: np.ndarray,
    probs: np.ndarray,
    patient_ids: np.ndarray,
    *,
    val_logits: np.ndarray | None = None,
    val_y: np.ndarray | None = None,
    logits: np.ndarray | None = None,
    y_pred: np.ndarray | None = None,
    settings: EvalSettings,
) -> EvaluationResult:
    """Image- and patient-level metrics with patient-bootstrap CIs, plus calibration.

    ``y_pred`` defaults to the arg-max of ``probs``; pass it for a regression model whose
    grades come from thresholds. At patient level the prediction is the arg-max of the
    aggregated probabilities (or, with ``y_pred`` given, the patient's worst predicted grade).
    The primary metric (QWK for ordinal tasks, macro-F1 otherwise) is the image-level one.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    patient_ids = np.asarray(patient_ids)
    _check_inputs(task, y_true, probs, patient_ids)
    given_pred = y_pred is not None
    y_pred = np.asarray(y_pred, dtype=np.int64) if given_pred else probs.argmax(axis=1)
    boot = {"n_boot": settings.bootstrap, "seed": settings.seed}

    image = level_metrics(task, y_true, probs, y_pred, groups=patient_ids, **boot)
    ids, p_patient, y_patient = aggregate_by_patient(
        patient_ids,
        probs,
        y_true,
        settings.patient_aggregation,
        normal_class=task.normal_class,
        severity=task.severity_order,
    )
    if given_pred:
        inverse = np.unique(patient_ids, return_inverse=True)[1]
        pred_patient = worst_label(y_pred, inverse, ids.size, task.severity_order)
    else:
        pred_patient = p_patient.argmax(axis=1)
    patient = level_metrics(task, y_patient, p_patient, pred_patient, groups=None, **boot)
    calibration = calibration_report(
        probs, y_true, logits=logits, val_logits=val_logits, val_y=val_y, n_bins=settings.ece_bins
    )
    primary = image.qwk if task.ordinal else image.macro_f1
    logger.info(
        "%s: %s %s on %d images / %d patients", task.name, task.primary_metric, primary, len(y_true), ids.size
    )
    return EvaluationResult(
        task=task.name,
        label_names=list(task.label_names),
        referable_name=task.referable_name,
        primary_metric=task.primary_metric,
        primary=primary,
        aggregation=settings.patient_aggregation,
        n_boot=settings.bootstrap,
        seed=settings.seed,
        image_level=image,
        patient_level=patient,
        calibration=calibration,
    )


def youden_threshold(y_true01: np.ndarray, score: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (the highest one among ties)."""
    fpr, tpr, thresholds = roc_curve_points(y_true01, score)
    j = tpr[1:] - fpr[1:]  # skip the "nothing positive" corner at threshold inf
    if j.size == 0 or np.all(np.isnan(j)):
        return 0.5
    return float(thresholds[1:][int(np.nanargmax(j))])


def _binary_statistics(w: np.ndarray, y: np.ndarray, s: np.ndarray, youden: float) -> dict[str, np.ndarray]:
    """Screening metrics for each row of resample weights ``w`` (B, N), all as weighted sums."""
    pos, neg = y.astype(np.float64), (~y).astype(np.float64)
    at_half, at_youden = s >= 0.5, s >= youden
    n_pos, n_neg, n = w @ pos, w @ neg, w.sum(axis=1)

    def rate(hits: np.ndarray, total: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (w @ hits) / np.where(total > 0, total, 1.0), np.nan)

    return {
        "auc": weighted_roc_auc(y, s, w),
        "accuracy": rate((at_half == y).astype(np.float64), n),
        "sensitivity": rate(pos * at_half, n_pos),
        "specificity": rate(neg * ~at_half, n_neg),
        "youden_sensitivity": rate(pos * at_youden, n_pos),
        "youden_specificity": rate(neg * ~at_youden, n_neg),
        "brier": rate((s - pos) ** 2, n),
    }


def evaluate_binary(
    y_true01: np.ndarray,
    score: np.ndarray,
    patient_ids: np.ndarray,
    settings: EvalSettings,
    *,
    val_y01: np.ndarray | None = None,
    val_score: np.ndarray | None = None,
) -> BinaryResult:
    """Screening metrics of a probability of disease (the fusion head), with patient-bootstrap CIs.

    The Youden threshold is chosen on the validation split when ``val_y01``/``val_score`` are
    given; otherwise on the evaluated data itself, which flatters the operating point (recorded
    in ``youden_source``). Its CIs hold the threshold fixed.
    """
    y = np.asarray(y_true01).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    if s.shape != y.shape or len(patient_ids) != y.size or y.size == 0:
        raise ValueError("y_true01, score and patient_ids must be non-empty and of equal length")
    if s.min() < 0 or s.max() > 1:
        raise ValueError("score must be a probability in [0, 1]")
    on_validation = val_y01 is not None and val_score is not None
    youden = youden_threshold(val_y01, val_score) if on_validation else youden_threshold(y, s)
    est = bootstrap_weighted(
        lambda w, yy, ss: _binary_statistics(w, yy, ss, youden),
        y,
        s,
        groups=np.asarray(patient_ids),
        n_boot=settings.bootstrap,
        seed=settings.seed,
    )
    return BinaryResult(
        n=int(y.size),
        n_patients=int(np.unique(np.asarray(patient_ids)).size),
        prevalence=float(y.mean()),
        youden_threshold=youden,
        youden_source="validation" if on_validation else "evaluated data",
        ece=expected_calibration_error(np.c_[1.0 - s, s], y.astype(np.int64), settings.ece_bins),
        roc=roc_curve(y, s),
        **est,
    )
