"""The report's figures, read back from the matplotlib objects they are drawn with.

Each ``*_figure`` is inspected for what it shows (the lines and points drawn, from the data
given); each ``*_png`` must be exactly that figure rendered, so a PNG that shows something
else, or nothing, cannot pass either.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from retina_core.evaluation import BinaryResult, Estimate, EvaluationResult
from retina_core.evaluation.calibration import ReliabilityBin
from retina_core.reporting import ComparisonRow, ReportData, TrainingCurves
from retina_core.reporting.figures import (
    DPI,
    FIGSIZE,
    RocSeries,
    confusion_matrix_figure,
    confusion_matrix_png,
    forest_figure,
    forest_png,
    reliability_figure,
    reliability_png,
    roc_figure,
    roc_png,
    to_png,
    training_curves_figure,
    training_curves_png,
)
from retina_core.reporting.format import format_estimate

CURVES = TrainingCurves(
    train_loss=[1.0, 0.7, 0.5], val_loss=[1.1, 0.9, 0.8], val_metric=[0.2, 0.4, 0.5], val_metric_name="qwk"
)


def _png_size(content: bytes) -> tuple[int, int]:
    assert content.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(content)) as image:
        image.verify()
        return image.size


def _main_axes(fig: Figure) -> Axes:
    return fig.axes[0]


def _data_lines(ax: Axes) -> list[Line2D]:
    """Lines with a legend label: the data series (matplotlib names unlabelled ones ``_child…``)."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def _xy(line: Line2D) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def _roc_series(fundus_result: EvaluationResult, screening: dict) -> list[RocSeries]:
    level = fundus_result.image_level
    fusion: BinaryResult = screening["concat-MLP fusion"]
    return [
        RocSeries("normal vs disease", level.disease_roc, level.disease_auc),
        RocSeries("referable", level.referable_roc, level.referable_auc),
        RocSeries("fusion", fusion.roc, fusion.auc),
    ]


def test_confusion_matrix_colours_the_row_share_and_prints_the_counts(
    fundus_result: EvaluationResult,
) -> None:
    matrix = np.asarray(fundus_result.image_level.confusion_matrix)
    names = fundus_result.label_names
    ax = _main_axes(confusion_matrix_figure(matrix, names))

    (image,) = ax.get_images()
    share = matrix / matrix.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(image.get_array()), share)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(i, j): f"{n}\n{100 * share[i, j]:.0f}%" for (i, j), n in np.ndenumerate(matrix)}
    assert [t.get_text() for t in ax.get_xticklabels()] == list(names)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(names)


def test_confusion_matrix_shape_must_match_the_labels(oct_result: EvaluationResult) -> None:
    with pytest.raises(ValueError, match="4x4"):
        confusion_matrix_png(oct_result.image_level.confusion_matrix[:3], oct_result.label_names)


def test_confusion_matrix_with_an_empty_class(oct_result: EvaluationResult) -> None:
    matrix = [list(row) for row in oct_result.image_level.confusion_matrix]
    matrix[0] = [0] * len(matrix)
    ax = _main_axes(confusion_matrix_figure(matrix, oct_result.label_names))
    assert np.asarray(ax.get_images()[0].get_array())[0].tolist() == [0.0] * len(matrix)
    assert [t.get_text() for t in ax.texts[: len(matrix)]] == ["0"] * len(matrix)


def test_roc_draws_each_series_from_its_points_with_its_auc(
    fundus_result: EvaluationResult, screening: dict
) -> None:
    series = _roc_series(fundus_result, screening)
    ax = _main_axes(roc_figure(series))

    chance, *curves = _data_lines(ax)
    assert chance.get_label() == "chance" and [list(a) for a in _xy(chance)] == [[0, 1], [0, 1]]
    assert len(curves) == len(series)
    for line, s in zip(curves, series, strict=True):
        x, y = _xy(line)
        np.testing.assert_array_equal(x, s.curve.fpr)
        np.testing.assert_array_equal(y, s.curve.tpr)
        assert line.get_label() == f"{s.name}: AUC {format_estimate(s.auc)}"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["chance", *(f"{s.name}: AUC {format_estimate(s.auc)}" for s in series)]


def test_reliability_draws_the_filled_bins_before_and_after_scaling(oct_result: EvaluationResult) -> None:
    calibration = oct_result.calibration
    assert calibration.after is not None and calibration.temperature is not None

    def filled(bins: list[ReliabilityBin]) -> tuple[list[float], list[float]]:
        kept = [b for b in bins if b.count > 0]
        assert kept, "the fixture should fill some bins"
        return [b.confidence for b in kept], [b.accuracy for b in kept]  # type: ignore[misc]

    both = _data_lines(_main_axes(reliability_figure(*_calibration_args(oct_result))))
    assert [line.get_label() for line in both] == [
        "perfect calibration",
        "before scaling",
        f"after scaling (T = {calibration.temperature:.2f})",
    ]
    for line, bins in ((both[1], calibration.before.reliability), (both[2], calibration.after.reliability)):
        x, y = _xy(line)
        expected_x, expected_y = filled(bins)
        np.testing.assert_allclose(x, expected_x)
        np.testing.assert_allclose(y, expected_y)

    before_only = _data_lines(_main_axes(reliability_figure(calibration.before.reliability)))
    assert [line.get_label() for line in before_only] == ["perfect calibration", "before scaling"]


def _calibration_args(result: EvaluationResult) -> tuple:
    calibration = result.calibration
    assert calibration.after is not None
    return calibration.before.reliability, calibration.after.reliability, calibration.temperature


def test_empty_reliability_bins_are_left_out_not_drawn_at_zero() -> None:
    bins = [
        ReliabilityBin(0.0, 0.5, 0, None, None),
        ReliabilityBin(0.5, 0.75, 4, 0.6, 0.5),
        ReliabilityBin(0.75, 1.0, 6, 0.9, 1.0),
    ]
    _, before = _data_lines(_main_axes(reliability_figure(bins)))
    assert [list(a) for a in _xy(before)] == [[0.6, 0.9], [0.5, 1.0]]


def test_training_curves_plot_each_epoch_from_one() -> None:
    fig = training_curves_figure(CURVES)
    loss_ax, metric_ax = fig.axes
    lines = {line.get_label(): _xy(line) for line in _data_lines(loss_ax) + _data_lines(metric_ax)}
    epochs = [1.0, 2.0, 3.0]
    assert {k: (list(x), list(y)) for k, (x, y) in lines.items()} == {
        "train loss": (epochs, CURVES.train_loss),
        "val loss": (epochs, CURVES.val_loss),
        "val qwk": (epochs, CURVES.val_metric),
    }
    assert metric_ax.get_ylabel() == "val qwk"


def test_training_curves_without_validation_draw_the_train_loss_only() -> None:
    fig = training_curves_figure(
        TrainingCurves(train_loss=[1.0], val_loss=[], val_metric=[], val_metric_name="qwk")
    )
    loss_ax, metric_ax = fig.axes
    assert [(line.get_label(), list(_xy(line)[1])) for line in _data_lines(loss_ax)] == [
        ("train loss", [1.0])
    ]
    assert _data_lines(metric_ax) == []


def test_forest_plot_puts_each_auc_and_interval_on_its_row_and_marks_undefined(
    report_data: ReportData,
) -> None:
    rows = report_data.fusion_comparison
    assert rows is not None
    undefined = ComparisonRow(name="undefined", auc=Estimate(math.nan, math.nan, math.nan, 3), n=3)
    missing = ComparisonRow(name="not computed", auc=None, n=0)
    shown = [*rows, undefined, missing]
    ax = _main_axes(forest_figure(shown))

    points = {}
    intervals = {}
    for line in ax.get_lines():
        x, y = _xy(line)
        if line.get_marker() == "s":
            points[int(y[0])] = float(x[0])
        elif len(x) == 2 and y[0] == y[1]:
            intervals[int(y[0])] = (float(x[0]), float(x[1]))
    assert points == {y: row.auc.value for y, row in enumerate(rows)}  # type: ignore[union-attr]
    assert intervals == {y: (row.auc.low, row.auc.high) for y, row in enumerate(rows)}  # type: ignore[union-attr]
    marked = {round(t.get_position()[1]) for t in ax.texts if t.get_text() == "n/a"}
    assert marked == {len(rows), len(rows) + 1}
    assert [t.get_text() for t in ax.get_yticklabels()] == [r.name for r in shown]


def test_forest_plot_grows_with_rows(report_data: ReportData) -> None:
    rows = report_data.fusion_comparison
    assert rows is not None
    small = _png_size(forest_png(rows[:2]))
    large = _png_size(forest_png([*rows, *rows]))
    assert large[1] > small[1]


FIGURES: dict[str, tuple[Callable[..., Figure], Callable[..., bytes]]] = {
    "confusion": (confusion_matrix_figure, confusion_matrix_png),
    "roc": (roc_figure, roc_png),
    "reliability": (reliability_figure, reliability_png),
    "curves": (training_curves_figure, training_curves_png),
    "forest": (forest_figure, forest_png),
}


@pytest.mark.parametrize("kind", sorted(FIGURES))
def test_png_is_the_inspected_figure_rendered(
    kind: str,
    fundus_result: EvaluationResult,
    oct_result: EvaluationResult,
    screening: dict,
    report_data: ReportData,
) -> None:
    args = {
        "confusion": (fundus_result.image_level.confusion_matrix, fundus_result.label_names),
        "roc": (_roc_series(fundus_result, screening),),
        "reliability": _calibration_args(oct_result),
        "curves": (CURVES,),
        "forest": (report_data.fusion_comparison,),
    }[kind]
    figure, png = FIGURES[kind]
    content = png(*args)
    assert content == to_png(figure(*args))
    if kind != "forest":  # the forest plot's height follows its rows
        assert _png_size(content) == (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI)
