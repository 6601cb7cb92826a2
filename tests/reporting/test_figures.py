from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from retina_core.evaluation import BinaryResult, Estimate, EvaluationResult
from retina_core.reporting import ComparisonRow, ReportData, TrainingCurves
from retina_core.reporting.figures import (
    DPI,
    FIGSIZE,
    RocSeries,
    confusion_matrix_png,
    forest_png,
    reliability_png,
    roc_png,
    training_curves_png,
)


def _png_size(content: bytes) -> tuple[int, int]:
    assert content.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(content)) as image:
        image.verify()
        return image.size


def test_confusion_matrix_is_a_small_png(fundus_result: EvaluationResult) -> None:
    png = confusion_matrix_png(fundus_result.image_level.confusion_matrix, fundus_result.label_names)
    assert _png_size(png) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)


def test_confusion_matrix_shape_must_match_the_labels(oct_result: EvaluationResult) -> None:
    with pytest.raises(ValueError, match="4x4"):
        confusion_matrix_png(oct_result.image_level.confusion_matrix[:3], oct_result.label_names)


def test_confusion_matrix_with_an_empty_class(oct_result: EvaluationResult) -> None:
    matrix = [list(row) for row in oct_result.image_level.confusion_matrix]
    matrix[0] = [0] * len(matrix)
    _png_size(confusion_matrix_png(matrix, oct_result.label_names))


def test_roc_with_several_curves(fundus_result: EvaluationResult, screening: dict) -> None:
    level = fundus_result.image_level
    fusion: BinaryResult = screening["concat-MLP fusion"]
    png = roc_png(
        [
            RocSeries("normal vs disease", level.disease_roc, level.disease_auc),
            RocSeries("referable", level.referable_roc, level.referable_auc),
            RocSeries("fusion", fusion.roc, fusion.auc),
        ]
    )
    _png_size(png)


def test_reliability_before_and_after_and_before_only(oct_result: EvaluationResult) -> None:
    calibration = oct_result.calibration
    assert calibration.after is not None
    both = reliability_png(
        calibration.before.reliability, calibration.after.reliability, calibration.temperature
    )
    before_only = reliability_png(calibration.before.reliability)
    assert both != before_only
    _png_size(both)
    _png_size(before_only)


def test_training_curves_including_a_run_without_validation_metric() -> None:
    _png_size(
        training_curves_png(
            TrainingCurves(
                train_loss=[1.0, 0.7, 0.5],
                val_loss=[1.1, 0.9, 0.8],
                val_metric=[0.2, 0.4, 0.5],
                val_metric_name="qwk",
            )
        )
    )
    _png_size(
        training_curves_png(
            TrainingCurves(train_loss=[1.0], val_loss=[], val_metric=[], val_metric_name="qwk")
        )
    )


def test_forest_plot_grows_with_rows_and_marks_undefined(report_data: ReportData) -> None:
    rows = report_data.fusion_comparison
    assert rows is not None
    undefined = ComparisonRow(name="undefined", auc=Estimate(math.nan, math.nan, math.nan, 3), n=3)
    missing = ComparisonRow(name="not computed", auc=None, n=0)
    small = _png_size(forest_png(rows[:2]))
    large = _png_size(forest_png([*rows, undefined, missing]))
    assert large[1] > small[1]
