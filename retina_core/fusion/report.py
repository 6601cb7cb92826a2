"""The fusion run as a Prefect markdown artifact: pairing kind first, then counts, rows and gains.

The report's data (:class:`retina_core.results.FusionReport`) says plainly whether pairs
were virtual or real, because the two answer different questions: virtual pairs show how
well two *independent* views of one label combine; only real same-eye pairs can show that
one modality catches what the other misses.
"""

from __future__ import annotations

from retina_core.reporting.format import format_signed_estimate
from retina_core.reporting.markdown import fusion_comparison_table, table
from retina_core.results import FusionReport


def fusion_markdown(report: FusionReport) -> str:
    """The Prefect artifact: pairing kind first, then counts, the comparison and the gains."""
    ev = report.evaluation
    counts = table(
        ["Split", "Pairs", "Diseased", "Fundus images", "OCT images", "Bootstrap units"],
        [
            (split, c["pairs"], c["diseased"], c["fundus_images"], c["oct_images"], c["units"])
            for split, c in ev.counts.items()
        ],
    )
    embedded = (
        f"Embeddings: {report.embeddings.computed} computed, {report.embeddings.reused} reused."
        if report.embeddings is not None
        else ""
    )
    lines = [
        f"# {report.model_name} v{report.version} ({report.status}): {ev.pairing.upper()} pairs",
        "",
        ev.pairing_note,
        "",
        counts,
        "",
        embedded,
        "",
        "## Same test pairs, every row",
        "",
        fusion_comparison_table(report.comparison_rows()),
        "",
        "## Missing modality (the fusion head)",
        "",
        fusion_comparison_table(report.missing_modality_rows()),
        "",
        f"- Gain vs best single modality ({ev.best_single}): {format_signed_estimate(ev.gain_vs_best_single)}",
        f"- Gain vs late fusion: {format_signed_estimate(ev.gain_vs_late_fusion)}",
        f"- Gain vs shuffled-pair control: {format_signed_estimate(ev.gain_vs_shuffled_control)}",
    ]
    if report.decision is not None:
        lines += ["", f"Registry: {report.decision.reason}"]
    return "\n".join(lines)
