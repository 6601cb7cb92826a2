from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from retina_core.config import EvalSettings
from retina_core.domain import Modality
from retina_core.evaluation import (
    BinaryResult,
    EvaluationResult,
    TaskSpec,
    evaluate_binary,
    evaluate_predictions,
)
from retina_core.evaluation.calibration import softmax
from retina_core.evaluation.thresholds import apply_thresholds, regression_scores_to_probs

SETTINGS = EvalSettings(bootstrap=200, seed=0)
DR = TaskSpec.for_modality(Modality.FUNDUS)
OCT = TaskSpec.for_modality(Modality.OCT)


def _overconfident_logits(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """A decent but overconfident classifier: true-class signal plus noise, then scaled by 3."""
    return 3.0 * (rng.normal(size=(y.size, k)) + 1.5 * np.eye(k)[y])


def _oct_case(n_patients: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    scans = rng.integers(1, 6, n_patients)
    patient_ids = np.repeat([f"P{i:03d}" for i in range(n_patients)], scans)
    y = np.repeat(rng.integers(0, 4, n_patients), scans)
    logits = _overconfident_logits(y, 4, rng)
    val_y = rng.integers(0, 4, 300)
    return {
        "y": y,
        "logits": logits,
        "patient_ids": patient_ids,
        "val_y": val_y,
        "val_logits": _overconfident_logits(val_y, 4, rng),
    }


def _floats(node: Any, path: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _floats(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _floats(value, f"{path}[{i}]")
    elif isinstance(node, float):
        yield path, node


def _estimates(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if {"value", "low", "high", "n_units"} <= node.keys():
            yield node
        for value in node.values():
            yield from _estimates(value)
    elif isinstance(node, list):
        for value in node:
            yield from _estimates(value)


@pytest.fixture(scope="module")
def oct_result() -> tuple[EvaluationResult, dict[str, np.ndarray]]:
    case = _oct_case(120, seed=0)
    result = evaluate_predictions(
        OCT,
        case["y"],
        softmax(case["logits"]),
        case["patient_ids"],
        val_logits=case["val_logits"],
        val_y=case["val_y"],
        logits=case["logits"],
        settings=SETTINGS,
    )
    return result, case


def test_result_is_json_serialisable_and_finite(oct_result: tuple[EvaluationResult, dict]) -> None:
    result, _ = oct_result
    text = result.model_dump_json()
    data = json.loads(text)
    bad = [path for path, value in _floats(data) if not math.isfinite(value)]
    assert bad == []
    assert EvaluationResult.model_validate_json(text) == result
    for est in _estimates(data):
        assert est["low"] <= est["high"]
        assert est["n_dropped"] == 0


def test_levels_count_images_and_patients(oct_result: tuple[EvaluationResult, dict]) -> None:
    result, case = oct_result
    n_images, n_patients = case["y"].size, np.unique(case["patient_ids"]).size
    assert result.image_level.n == n_images
    assert result.image_level.n_patients == n_patients
    assert result.patient_level.n == result.patient_level.n_patients == n_patients
    assert np.sum(result.image_level.confusion_matrix) == n_images
    assert np.sum(result.patient_level.confusion_matrix) == n_patients
    assert result.image_level.accuracy.n_units == n_patients  # image-level CI resamples patients
    assert result.image_level.qwk is None  # OCT classes are not ordered


def test_image_level_values_match_sklearn(oct_result: tuple[EvaluationResult, dict]) -> None:
    result, case = oct_result
    y, probs = case["y"], softmax(case["logits"])
    pred = probs.argmax(axis=1)
    image = result.image_level
    assert result.primary_metric == "macro_f1"
    assert result.primary == image.macro_f1
    assert image.macro_f1.value == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert image.balanced_accuracy.value == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert image.ovr_auc.value == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    urgent = np.isin(y, [0, 1])
    assert image.referable_auc.value == pytest.approx(skm.roc_auc_score(urgent, probs[:, 0] + probs[:, 1]))
    assert image.referable_sensitivity.value == pytest.approx(skm.recall_score(urgent, np.isin(pred, [0, 1])))
    assert image.disease_auc.value == pytest.approx(skm.roc_auc_score(y != 3, 1 - probs[:, 3]))
    assert [c.name for c in image.per_class] == ["CNV", "DME", "DRUSEN", "NORMAL"]
    assert [c.support for c in image.per_class] == np.bincount(y, minlength=4).tolist()


def test_roc_curves_are_plot_ready(oct_result: tuple[EvaluationResult, dict]) -> None:
    result, _ = oct_result
    for curve in (result.image_level.disease_roc, result.image_level.referable_roc):
        assert 2 < len(curve.fpr) <= 200
        assert (curve.fpr[0], curve.tpr[0], curve.thresholds[0]) == (0.0, 0.0, None)
        assert (curve.fpr[-1], curve.tpr[-1]) == (1.0, 1.0)
        assert np.all(np.diff(curve.fpr) >= 0) and np.all(np.diff(curve.tpr) >= 0)


def test_temperature_scaling_improves_calibration(oct_result: tuple[EvaluationResult, dict]) -> None:
    calibration = oct_result[0].calibration
    assert calibration.temperature is not None and calibration.temperature > 1.5
    assert calibration.after is not None
    assert calibration.after.nll < calibration.before.nll
    assert calibration.after.ece < calibration.before.ece
    assert len(calibration.before.reliability) == SETTINGS.ece_bins


def test_calibration_without_logits_uses_log_probabilities(oct_result: tuple[EvaluationResult, dict]) -> None:
    result, case = oct_result
    without = evaluate_predictions(
        OCT,
        case["y"],
        softmax(case["logits"]),
        case["patient_ids"],
        val_logits=case["val_logits"],
        val_y=case["val_y"],
        settings=SETTINGS,
    )
    assert without.calibration.after.nll == pytest.approx(result.calibration.after.nll, rel=1e-6)
    no_val = evaluate_predictions(
        OCT, case["y"], softmax(case["logits"]), case["patient_ids"], settings=SETTINGS
    )
    assert no_val.calibration.temperature is None and no_val.calibration.after is None


def test_dr_grading_uses_qwk_and_max_aggregation() -> None:
    rng = np.random.default_rng(1)
    y = rng.choice(5, size=250, p=[0.45, 0.1, 0.25, 0.08, 0.12])
    logits = _overconfident_logits(y, 5, rng)
    patient_ids = np.arange(250) // 2  # two eyes per patient
    settings = SETTINGS.model_copy(update={"patient_aggregation": "max"})
    result = evaluate_predictions(DR, y, softmax(logits), patient_ids, settings=settings)
    pred = logits.argmax(axis=1)
    assert result.primary_metric == "qwk"
    assert result.primary.value == pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"))
    assert result.aggregation == "max"
    assert result.patient_level.n == 125
    worst = np.maximum(y[0::2], y[1::2])
    assert [c.support for c in result.patient_level.per_class] == np.bincount(worst, minlength=5).tolist()
    assert result.primary.low < result.primary.value < result.primary.high


def test_regression_model_passes_thresholded_grades() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 200)
    scores = y + rng.normal(scale=0.5, size=200)
    thresholds = np.array([0.5, 1.5, 2.5, 3.5])
    grades = apply_thresholds(scores, thresholds)
    probs = regression_scores_to_probs(scores, thresholds, 0.3)
    result = evaluate_predictions(DR, y, probs, np.arange(200), y_pred=grades, settings=SETTINGS)
    assert result.primary.value == pytest.approx(skm.cohen_kappa_score(y, grades, weights="quadratic"))
    assert result.patient_level.qwk.value == pytest.approx(result.primary.value)


def test_rejects_inconsistent_inputs() -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate_predictions(OCT, np.zeros(3, int), np.full((3, 5), 0.2), np.arange(3), settings=SETTINGS)
    with pytest.raises(ValueError, match="probability"):
        evaluate_predictions(OCT, np.zeros(3, int), np.ones((3, 4)), np.arange(3), settings=SETTINGS)


def test_evaluate_binary_screening() -> None:
    rng = np.random.default_rng(3)

    def case(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < 0.4).astype(int)
        return y, 1 / (1 + np.exp(-(2.5 * (y - 0.5) + rng.normal(size=n))))

    y, score = case(300)
    val_y, val_score = case(200)
    patients = np.arange(300) // 3
    result = evaluate_binary(y, score, patients, SETTINGS, val_y01=val_y, val_score=val_score)
    assert isinstance(result, BinaryResult)
    assert result.youden_source == "validation"
    assert result.n == 300 and result.n_patients == 100
    assert result.auc.value == pytest.approx(skm.roc_auc_score(y, score))
    assert result.brier.value == pytest.approx(skm.brier_score_loss(y, score))
    assert result.sensitivity.value == pytest.approx(skm.recall_score(y, score >= 0.5))
    assert result.youden_sensitivity.value == pytest.approx(
        skm.recall_score(y, score >= result.youden_threshold)
    )
    assert 0 < result.ece < 0.2
    assert result.auc.low > 0.8
    assert BinaryResult.model_validate_json(result.model_dump_json()) == result
    assert not [p for p, v in _floats(json.loads(result.model_dump_json())) if not math.isfinite(v)]

    own = evaluate_binary(y, score, patients, SETTINGS)
    fpr, tpr, thresholds = skm.roc_curve(y, score)
    assert own.youden_source == "evaluated data"
    assert own.youden_threshold == pytest.approx(thresholds[np.argmax(tpr - fpr)])


def test_binary_intervals_equal_a_plain_per_resample_bootstrap() -> None:
    """The vectorised screening bootstrap against one metric call per resampled row set."""
    from retina_core.evaluation.bootstrap import bootstrap_many
    from retina_core.evaluation.calibration import binary_brier_score
    from retina_core.evaluation.metrics import accuracy, roc_auc_binary, sensitivity_specificity

    rng = np.random.default_rng(11)
    patients = np.repeat(np.arange(70), rng.integers(1, 4, 70))
    y = (rng.random(patients.size) < 0.35).astype(int)
    score = np.round(1 / (1 + np.exp(-(2 * (y - 0.5) + rng.normal(size=y.size)))), 2)
    result = evaluate_binary(y, score, patients, SETTINGS)
    cut = result.youden_threshold

    def plain(yy: np.ndarray, ss: np.ndarray) -> dict[str, float]:
        sens, spec = sensitivity_specificity(yy, ss >= 0.5)
        y_sens, y_spec = sensitivity_specificity(yy, ss >= cut)
        return {
            "auc": roc_auc_binary(yy, ss),
            "accuracy": accuracy(yy.astype(bool), ss >= 0.5),
            "sensitivity": sens,
            "specificity": spec,
            "youden_sensitivity": y_sens,
            "youden_specificity": y_spec,
            "brier": binary_brier_score(yy, ss),
        }

    expected = bootstrap_many(plain, y, score, groups=patients, n_boot=SETTINGS.bootstrap, seed=SETTINGS.seed)
    for name, est in expected.items():
        got = getattr(result, name)
        assert (got.value, got.low, got.high) == pytest.approx((est.value, est.low, est.high), abs=1e-12), (
            name
        )
        assert got.n_dropped == est.n_dropped
