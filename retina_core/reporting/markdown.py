"""Markdown tables and table rows for Prefect artifacts: the report's numbers, where the run is watched.

Pure functions returning strings (for ``create_markdown_artifact``) or plain rows (for
``create_table_artifact``); the Prefect calls themselves live in ``tasks/``. The formatting
is the report's own (:mod:`retina_core.reporting.format`), so the UI and the HTML agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from retina_core.evaluation import BinaryResult, Estimate, EvaluationResult
from retina_core.reporting.data import ComparisonRow, PointingRow, RegistryDecision
from retina_core.reporting.format import (
    format_estimate,
    format_number,
    format_signed_estimate,
    metric_label,
)

_LEVEL_KEYS = (
    "qwk",
    "macro_f1",
    "accuracy",
    "balanced_accuracy",
    "ovr_auc",
    "disease_auc",
    "disease_sensitivity",
    "disease_specificity",
    "referable_auc",
    "referable_sensitivity",
    "referable_specificity",
)
_NOT_REPORTED = "not reported"
"""A comparison row that leaves a metric out: the stage ran, this number was not computed."""
_BINARY_KEYS = (
    "auc",
    "accuracy",
    "sensitivity",
    "specificity",
    "youden_sensitivity",
    "youden_specificity",
    "brier",
)


def _cell(text: object) -> str:
    """Escape what would break a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _json_number(value: float) -> float | None:
    """JSON has no NaN: an undefined value becomes null in an artifact row."""
    return value if math.isfinite(value) else None


def _estimates(result: EvaluationResult | BinaryResult) -> list[tuple[str, str, Estimate]]:
    """(metric key, level, estimate) in display order; metrics that do not apply are left out."""
    if isinstance(result, BinaryResult):
        return [(key, "pair", getattr(result, key)) for key in _BINARY_KEYS]
    return [
        (key, level_name, getattr(level, key))
        for level_name, level in (("image", result.image_level), ("patient", result.patient_level))
        for key in _LEVEL_KEYS
        if getattr(level, key) is not None
    ]


def metrics_rows(result: EvaluationResult | BinaryResult) -> list[dict[str, Any]]:
    """One row per metric and level, for ``create_table_artifact``; NaN as ``None`` (JSON-safe)."""
    return [
        {
            "metric": metric_label(key),
            "level": level,
            "value": _json_number(e.value),
            "ci_low": _json_number(e.low),
            "ci_high": _json_number(e.high),
            "patients": e.n_units,
            "estimate": format_estimate(e),
        }
        for key, level, e in _estimates(result)
    ]


def metrics_table(result: EvaluationResult | BinaryResult, title: str | None = None) -> str:
    """Metric x level table with 95% CIs (image and patient level side by side for a grader)."""
    heading = [f"### {title}", ""] if title else []
    if isinstance(result, BinaryResult):
        rows = [(metric_label(key), format_estimate(e)) for key, _, e in _estimates(result)]
        body = table(["Metric", f"Estimate (n = {result.n}, {result.n_patients} patients)"], rows)
        return "\n".join([*heading, body])
    rows = [
        (
            metric_label(key),
            format_estimate(getattr(result.image_level, key)),
            format_estimate(getattr(result.patient_level, key)),
        )
        for key in _LEVEL_KEYS
        if getattr(result.image_level, key) is not None
    ]
    header = [
        "Metric",
        f"Image level (n = {result.image_level.n})",
        f"Patient level (n = {result.patient_level.n})",
    ]
    calibration = result.calibration
    after = calibration.after.ece if calibration.after is not None else None
    footer = (
        f"ECE {format_number(calibration.before.ece)} before, "
        f"{format_number(after, missing='not fitted')} after temperature scaling "
        f"(T = {format_number(calibration.temperature, digits=2, missing='not fitted')})."
    )
    return "\n".join([*heading, table(header, rows), "", footer])


def fusion_comparison_table(rows: Sequence[ComparisonRow] | None) -> str:
    if not rows:
        return "Fusion comparison: not run."
    return table(
        ["Input / model", "n", "AUC", "Sensitivity", "Specificity", "Gain vs best single"],
        [
            (
                r.name,
                r.n,
                format_estimate(r.auc, _NOT_REPORTED),
                format_estimate(r.sensitivity, _NOT_REPORTED),
                format_estimate(r.specificity, _NOT_REPORTED),
                format_signed_estimate(r.gain_vs_best_single, "—"),
            )
            for r in rows
        ],
    )


def pointing_game_table(rows: Sequence[PointingRow] | None) -> str:
    if not rows:
        return "Pointing game: not run (no lesion masks)."
    return table(
        ["Class", "n", "Hit rate", "Random hit rate", "Energy", "Random energy"],
        [
            (
                r.label,
                r.n,
                format_number(r.hit_rate),
                format_number(r.random_hit_rate),
                format_number(r.energy),
                format_number(r.random_energy),
            )
            for r in rows
        ],
    )


def registry_decision_markdown(decision: RegistryDecision | None, model: str = "model") -> str:
    if decision is None:
        return f"Registry decision for {model}: not run."
    champion = (
        f"v{decision.champion_version}: {format_estimate(decision.champion)}"
        if decision.champion_version is not None
        else "none (first version)"
    )
    return "\n".join(
        [
            f"**{model}: {decision.status}**",
            "",
            table(
                ["", metric_label(decision.metric)],
                [
                    ("Candidate", format_estimate(decision.candidate)),
                    ("Champion", champion),
                    ("Margin required", format_number(decision.margin)),
                ],
            ),
            "",
            decision.reason,
        ]
    )
