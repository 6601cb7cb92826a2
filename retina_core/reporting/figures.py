"""The report's figures: pure functions from data to matplotlib figures, and to PNG bytes.

Each figure has two entry points: ``*_figure`` builds the :class:`Figure` (what a test
inspects: the lines, points and labels drawn from the data) and ``*_png`` renders that same
figure to PNG bytes for the report.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot): no global
figure state, so figures can be drawn from several threads or tasks at once and a failed
one never leaks into the next. They are small (4 x 3.2 in at 100 dpi) so a report with a
dozen of them stays a few hundred kilobytes and opens at once.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from retina_core.evaluation import Estimate
from retina_core.evaluation.calibration import ReliabilityBin
from retina_core.evaluation.result import RocCurve
from retina_core.reporting.data import ComparisonRow, TrainingCurves
from retina_core.reporting.format import format_estimate

FIGSIZE = (4.0, 3.2)
DPI = 100
_FONT = 7.5


class RocSeries(NamedTuple):
    name: str
    curve: RocCurve
    auc: Estimate


def new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes at :data:`DPI`."""
    buffer = io.BytesIO()
    # no "Software" text chunk: the bytes then depend only on the data, not the matplotlib version
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def confusion_matrix_figure(
    matrix: Sequence[Sequence[int]], label_names: Sequence[str], title: str = ""
) -> Figure:
    """Counts in each cell, coloured by the row-normalised share (recall per true class).

    Colouring by share rather than count keeps rare classes readable next to the majority
    class; the count stays printed so the reader sees how little evidence a share rests on.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    k = len(label_names)
    if counts.shape != (k, k):
        raise ValueError(f"confusion matrix must be {k}x{k}, got {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)
    fig = new_figure()
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), n in np.ndenumerate(counts):
        text = f"{n}\n{100 * share[i, j]:.0f}%" if totals[i, 0] else "0"
        ax.text(
            j,
            i,
            text,
            ha="center",
            va="center",
            fontsize=_FONT - 1,
            color="white" if share[i, j] > 0.6 else "black",
        )
    ax.set_xticks(range(k), label_names, rotation=35, ha="right", fontsize=_FONT)
    ax.set_yticks(range(k), label_names, fontsize=_FONT)
    ax.set_xlabel("Predicted", fontsize=_FONT)
    ax.set_ylabel("True", fontsize=_FONT)
    ax.set_title(title or "Confusion matrix (row %)", fontsize=_FONT + 1)
    fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=_FONT - 1)
    return fig


def confusion_matrix_png(
    matrix: Sequence[Sequence[int]], label_names: Sequence[str], title: str = ""
) -> bytes:
    """:func:`confusion_matrix_figure` as PNG bytes."""
    return to_png(confusion_matrix_figure(matrix, label_names, title))


def roc_figure(series: Sequence[RocSeries], title: str = "ROC") -> Figure:
    """One curve per series, its AUC and 95% CI in the legend; the chance diagonal for scale."""
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=0.8, label="chance")
    for s in series:
        ax.plot(s.curve.fpr, s.curve.tpr, linewidth=1.4, label=f"{s.name}: AUC {format_estimate(s.auc)}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 − specificity", fontsize=_FONT)
    ax.set_ylabel("Sensitivity", fontsize=_FONT)
    ax.tick_params(labelsize=_FONT)
    ax.set_title(title, fontsize=_FONT + 1)
    ax.legend(fontsize=_FONT - 1.5, loc="lower right")
    return fig


def roc_png(series: Sequence[RocSeries], title: str = "ROC") -> bytes:
    """:func:`roc_figure` as PNG bytes."""
    return to_png(roc_figure(series, title))


def _reliability_points(bins: Sequence[ReliabilityBin]) -> tuple[list[float], list[float]]:
    filled = [b for b in bins if b.count > 0 and b.confidence is not None and b.accuracy is not None]
    return [float(b.confidence) for b in filled], [float(b.accuracy) for b in filled]


def reliability_figure(
    before: Sequence[ReliabilityBin],
    after: Sequence[ReliabilityBin] | None = None,
    temperature: float | None = None,
) -> Figure:
    """Accuracy against confidence per bin, before and (when fitted) after temperature scaling.

    Empty bins are skipped rather than drawn at zero, which would read as badly calibrated.
    """
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=0.8, label="perfect calibration")
    ax.plot(*_reliability_points(before), marker="o", markersize=3, linewidth=1.2, label="before scaling")
    if after is not None:
        label = f"after scaling (T = {temperature:.2f})" if temperature is not None else "after scaling"
        ax.plot(*_reliability_points(after), marker="s", markersize=3, linewidth=1.2, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("Confidence (top label)", fontsize=_FONT)
    ax.set_ylabel("Accuracy", fontsize=_FONT)
    ax.tick_params(labelsize=_FONT)
    ax.set_title("Reliability diagram", fontsize=_FONT + 1)
    ax.legend(fontsize=_FONT - 1, loc="upper left", framealpha=0.6)
    return fig


def reliability_png(
    before: Sequence[ReliabilityBin],
    after: Sequence[ReliabilityBin] | None = None,
    temperature: float | None = None,
) -> bytes:
    """:func:`reliability_figure` as PNG bytes."""
    return to_png(reliability_figure(before, after, temperature))


def training_curves_figure(curves: TrainingCurves) -> Figure:
    """Losses on the left axis, the validation metric on the right, by epoch (1-based)."""
    fig = new_figure()
    ax = fig.add_subplot()
    for values, label, style in (
        (curves.train_loss, "train loss", "-"),
        (curves.val_loss, "val loss", "--"),
    ):
        if values:
            ax.plot(range(1, len(values) + 1), values, linestyle=style, linewidth=1.2, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Epoch", fontsize=_FONT)
    ax.set_ylabel("Loss", fontsize=_FONT)
    ax.tick_params(labelsize=_FONT)
    metric_ax = ax.twinx()
    if curves.val_metric:
        epochs = range(1, len(curves.val_metric) + 1)
        metric_ax.plot(
            epochs, curves.val_metric, color="tab:green", linewidth=1.2, label=f"val {curves.val_metric_name}"
        )
    metric_ax.set_ylabel(f"val {curves.val_metric_name}", fontsize=_FONT)
    metric_ax.tick_params(labelsize=_FONT)
    handles = ax.get_legend_handles_labels()[0] + metric_ax.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, fontsize=_FONT - 1, loc="center right")
    ax.set_title("Training curves", fontsize=_FONT + 1)
    return fig


def training_curves_png(curves: TrainingCurves) -> bytes:
    """:func:`training_curves_figure` as PNG bytes."""
    return to_png(training_curves_figure(curves))


def _forest_left(rows: Sequence[ComparisonRow]) -> float:
    """Zoom in on the AUCs shown, but never past chance (0.5), which stays on the axis as the yardstick."""
    lows = [r.auc.low for r in rows if r.auc is not None and math.isfinite(r.auc.low)]
    lows += [r.auc.value for r in rows if r.auc is not None and math.isfinite(r.auc.value)]
    return max(0.0, min([0.5, *lows]) - 0.05)


def forest_figure(rows: Sequence[ComparisonRow], title: str = "AUC with 95% CI") -> Figure:
    """AUC per comparison row with its interval; rows without a defined AUC are marked, not dropped."""
    fig = new_figure((FIGSIZE[0], max(FIGSIZE[1] * 0.6, 0.9 + 0.32 * len(rows))))
    ax = fig.add_subplot()
    for y, row in enumerate(rows):
        auc = row.auc
        if auc is None or not math.isfinite(auc.value):
            ax.text(0.5, y, "n/a", ha="center", va="center", fontsize=_FONT, color="grey")
            continue
        if math.isfinite(auc.low) and math.isfinite(auc.high):
            ax.plot([auc.low, auc.high], [y, y], color="black", linewidth=1.2)
        ax.plot([auc.value], [y], marker="s", color="tab:blue", markersize=5)
    ax.axvline(0.5, linestyle=":", color="grey", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [r.name for r in rows], fontsize=_FONT)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(_forest_left(rows), 1.01)
    ax.set_xlabel("AUC (normal vs disease)", fontsize=_FONT)
    ax.tick_params(axis="x", labelsize=_FONT)
    ax.set_title(title, fontsize=_FONT + 1)
    return fig


def forest_png(rows: Sequence[ComparisonRow], title: str = "AUC with 95% CI") -> bytes:
    """:func:`forest_figure` as PNG bytes."""
    return to_png(forest_figure(rows, title))
