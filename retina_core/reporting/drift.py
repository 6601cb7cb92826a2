"""The drift check in words and pictures: markdown and table rows for the Prefect artifact, and the
report's plots of the drifting features. Pure functions of a stored :class:`DriftReport`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from retina_core.drift.policy import RetrainDecision
from retina_core.drift.result import DriftReport, FeatureDrift
from retina_core.reporting.figures import new_figure, to_png
from retina_core.reporting.format import format_estimate, metric_label

_FONT = 7.5


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def drift_rows(report: DriftReport) -> list[dict[str, Any]]:
    """One row per test: what the table artifact and the report's table show."""
    rows: list[dict[str, Any]] = []
    for m in report.modalities:
        for f in m.features:
            rows.append(
                {
                    "modality": m.modality.value,
                    "test": f.feature,
                    "statistic": f"KS D {f.statistic:.3f}",
                    "effect": f"{f.effect:.2f} SD",
                    "p (Holm)": _p(f.adjusted_p),
                    "drift": "yes" if f.drifting else "no",
                }
            )
        if m.embedding is not None:
            e = m.embedding
            rows.append(
                {
                    "modality": m.modality.value,
                    "test": f"embeddings ({e.model})",
                    "statistic": f"MMD² {e.mmd2:.4f} ({e.n_reference} vs {e.n_new})",
                    "effect": "",
                    "p (Holm)": _p(e.adjusted_p),
                    "drift": "yes" if e.drifting else "no",
                }
            )
        if m.labels is not None:
            lab = m.labels
            rows.append(
                {
                    "modality": m.modality.value,
                    "test": "labels",
                    "statistic": f"χ² {lab.chi2:.2f}",
                    "effect": f"V {lab.cramers_v:.2f}",
                    "p (Holm)": _p(lab.adjusted_p),
                    "drift": "yes" if lab.drifting else "no",
                }
            )
    return rows


def drift_markdown(report: DriftReport, decision: RetrainDecision | None = None) -> str:
    """The artifact: verdict first, then one table of every test and the champion watch."""
    verdict = "**Drift detected**" if report.drifted else "No drift"
    lines = [
        f"# Drift check {report.check_id}",
        "",
        f"{verdict} (Holm over {report.n_tests} tests, family-wise α = {report.alpha}, "
        f"minimum effect {report.min_effect}). {report.summary()}",
        "",
    ]
    if decision is not None:
        lines += [f"Retrain: **{'yes' if decision.retrain else 'no'}**: {decision.reason}", ""]
    rows = drift_rows(report)
    if rows:
        header = list(rows[0])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
        lines.append("")
    for m in report.modalities:
        if m.note:
            lines.append(f"- {m.modality.value}: {m.note}")
        if m.watch is not None:
            w = m.watch
            lines.append(
                f"- {m.modality.value} champion {w.model}: {metric_label(w.metric)} on new images "
                f"{format_estimate(w.new)} vs registered {format_estimate(w.registered)}; "
                f"difference {format_estimate(w.difference)}{' — **degraded**' if w.degraded else ''}"
            )
    return "\n".join(lines) + "\n"


def feature_png(feature: FeatureDrift, title: str) -> bytes:
    """Reference and new densities of one feature on shared bins."""
    fig = new_figure()
    ax = fig.add_subplot()
    edges = feature.edges
    width = [b - a for a, b in itertools.pairwise(edges)]
    ax.bar(edges[:-1], feature.reference_density, width=width, align="edge", alpha=0.5, label="reference")
    ax.bar(edges[:-1], feature.new_density, width=width, align="edge", alpha=0.5, label="new")
    ax.set_title(title, fontsize=_FONT + 1)
    ax.set_xlabel(feature.label, fontsize=_FONT)
    ax.set_ylabel("density", fontsize=_FONT)
    ax.tick_params(labelsize=_FONT)
    ax.legend(fontsize=_FONT)
    return to_png(fig)


def drift_figures(report: DriftReport) -> dict[str, bytes]:
    """A plot per drifting feature, keyed ``drift-{modality}-{feature}`` for the template."""
    return {
        f"drift-{m.modality.value}-{f.feature}": feature_png(
            f, f"{m.modality.value}: {f.feature} (effect {f.effect:.2f} SD)"
        )
        for m in report.modalities
        for f in m.features
        if f.drifting
    }
