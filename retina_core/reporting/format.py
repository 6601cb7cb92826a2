"""How a number reads in a report: one set of rules shared by the HTML page, markdown and model card.

A reader must be able to tell three things apart at a glance: a measured value, a value
that is undefined on this data (an AUC on a test set with one class: ``nan``), and a stage
that never ran (``None``). Writing each rule once keeps the three outputs from disagreeing.
"""

from __future__ import annotations

import math

from retina_core.evaluation import Estimate

NOT_RUN = "not run"
UNDEFINED = "n/a (undefined on this data)"

METRIC_LABELS: dict[str, str] = {
    "qwk": "QWK",
    "macro_f1": "Macro-F1",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "ovr_auc": "One-vs-rest AUC (macro)",
    "disease_auc": "Normal vs disease AUC",
    "disease_sensitivity": "Disease sensitivity",
    "disease_specificity": "Disease specificity",
    "referable_auc": "Referable AUC",
    "referable_sensitivity": "Referable sensitivity",
    "referable_specificity": "Referable specificity",
    "auc": "AUC",
    "sensitivity": "Sensitivity (p ≥ 0.5)",
    "specificity": "Specificity (p ≥ 0.5)",
    "youden_sensitivity": "Sensitivity (Youden threshold)",
    "youden_specificity": "Specificity (Youden threshold)",
    "brier": "Brier score",
}


def metric_label(name: str) -> str:
    """Display name of a metric key; unknown keys are shown as they are rather than guessed at."""
    return METRIC_LABELS.get(name, name)


def is_defined(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def format_number(value: float | None, digits: int = 3, missing: str = NOT_RUN) -> str:
    """A plain float; ``None`` reads as ``missing`` and ``nan`` as undefined, never as a number."""
    if value is None:
        return missing
    if not math.isfinite(value):
        return UNDEFINED
    return f"{value:.{digits}f}"


def format_percent(value: float | None, missing: str = NOT_RUN) -> str:
    if value is None:
        return missing
    if not math.isfinite(value):
        return UNDEFINED
    return f"{100 * value:.1f} %"


def format_estimate(estimate: Estimate | None, missing: str = NOT_RUN) -> str:
    """``0.812 [0.774, 0.851]``; an interval that could not be estimated says so instead of hiding."""
    if estimate is None:
        return missing
    if not math.isfinite(estimate.value):
        return UNDEFINED
    if not (math.isfinite(estimate.low) and math.isfinite(estimate.high)):
        return f"{estimate.value:.3f} [CI undefined on this data]"
    return str(estimate)


def format_signed_estimate(estimate: Estimate | None, missing: str = NOT_RUN) -> str:
    """A difference (gain) with an explicit sign, so ``+0.031`` and ``-0.031`` are not confused."""
    if estimate is None:
        return missing
    if not math.isfinite(estimate.value):
        return UNDEFINED
    if not (math.isfinite(estimate.low) and math.isfinite(estimate.high)):
        return f"{estimate.value:+.3f} [CI undefined on this data]"
    return f"{estimate.value:+.3f} [{estimate.low:+.3f}, {estimate.high:+.3f}]"
