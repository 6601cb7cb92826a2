"""What a fusion run found, as data: every row on the same test pairs, the gains, and how pairs were made.

The report states plainly whether pairs were virtual or real, because the two answer
different questions: virtual pairs show how well two *independent* views of one label
combine; only real same-eye pairs can show that one modality catches what the other misses.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from retina_core.catalog.registry import Decision
from retina_core.evaluation import BinaryResult, Estimate
from retina_core.fusion.embed import EmbedReport
from retina_core.reporting.data import ComparisonRow
from retina_core.reporting.format import format_signed_estimate
from retina_core.reporting.markdown import fusion_comparison_table, table

PairingUsed = Literal["virtual", "real"]

PAIRING_NOTES: dict[str, str] = {
    "virtual": (
        "Virtual pairs: each fundus photo and OCT scan come from different patients and were matched "
        "only on the binary screening label, within one split. A gain here shows that two independent "
        "views of the label combine; it is not evidence that one modality catches what the other "
        "misses in the same eye. Bootstrap unit: the OCT patient."
    ),
    "real": (
        "Real pairs: same-eye fundus photo and OCT scan from the pairs manifest; an eye is diseased "
        "when either image's label says so. Bootstrap unit: the patient (both eyes resampled together)."
    ),
}


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


class FusionRow(_Data):
    key: str = Field(description="Stable machine name, e.g. 'fundus_only', 'fusion', 'shuffled_control'.")
    name: str
    description: str
    inputs: Literal["fundus", "oct", "both"]
    pairs: Literal["virtual", "real", "shuffled"]
    result: BinaryResult


class EncoderRef(_Data):
    modality: str
    name: str
    version: int
    cache_key: str


class FusionEvaluation(_Data):
    """The measured part of a run: stored as metrics.json beside the head, reused verbatim."""

    head: str
    pairing: PairingUsed
    pairing_note: str
    counts: dict[str, dict[str, int]] = Field(description="Per split: pairs, diseased, images, units.")
    rows: list[FusionRow] = Field(description="Same test pairs for every row except the shuffled control.")
    missing_modality: list[FusionRow] = Field(
        description="The fusion head given fundus only, OCT only, both."
    )
    best_single: str = Field(description="Key of the single-modality row with the higher test AUC.")
    gain_vs_best_single: Estimate = Field(description="AUC(fusion) - AUC(best single), paired bootstrap.")
    gain_vs_late_fusion: Estimate
    gain_vs_shuffled_control: Estimate = Field(
        description="AUC(fusion) - AUC(shuffled control) on the same cases; ~0 would mean no pairing benefit."
    )
    temperatures: dict[str, float] = Field(description="Validation-fitted temperature per row.")
    history: list[dict[str, float]]
    best_epoch: int

    def row(self, key: str) -> FusionRow:
        for r in [*self.rows, *self.missing_modality]:
            if r.key == key:
                return r
        raise KeyError(key)


class FusionReport(_Data):
    model_name: str
    version: int
    status: str
    reused: bool
    run_key: str
    data_version: int | None
    encoders: dict[str, EncoderRef]
    embeddings: EmbedReport | None = None
    evaluation: FusionEvaluation
    decision: Decision | None = None
    seconds: float

    @property
    def pairing(self) -> PairingUsed:
        return self.evaluation.pairing

    def comparison_rows(self) -> list[ComparisonRow]:
        """The rows the HTML report's fusion table and forest plot take."""
        return _comparison(self.evaluation.rows, self.evaluation)

    def missing_modality_rows(self) -> list[ComparisonRow]:
        return _comparison(self.evaluation.missing_modality, None)

    def table(self) -> list[dict[str, Any]]:
        """Plain rows for a Prefect table artifact."""
        ev = self.evaluation
        return [
            {
                "row": r.name,
                "pairs": r.pairs,
                "n": r.result.n,
                "units": r.result.n_patients,
                "auc": str(r.result.auc),
                "sensitivity": str(r.result.sensitivity),
                "specificity": str(r.result.specificity),
            }
            for r in [*ev.rows, *ev.missing_modality]
        ]

    def contract(self) -> dict[str, Any]:
        """The JSON object of ``retina train fusion --json``."""
        ev = self.evaluation
        return {
            "model": self.model_name,
            "version": self.version,
            "status": self.status,
            "reused": self.reused,
            "data_version": self.data_version,
            "pairing": ev.pairing,
            "counts": ev.counts,
            "encoders": {k: v.model_dump() for k, v in self.encoders.items()},
            "embeddings": self.embeddings.contract() if self.embeddings else None,
            "primary_metric": "auc",
            "primary": ev.row("fusion").result.auc.to_dict(),
            "rows": {r.key: _row_json(r) for r in [*ev.rows, *ev.missing_modality]},
            "best_single": ev.best_single,
            "gain_vs_best_single": ev.gain_vs_best_single.to_dict(),
            "gain_vs_late_fusion": ev.gain_vs_late_fusion.to_dict(),
            "gain_vs_shuffled_control": ev.gain_vs_shuffled_control.to_dict(),
            "decision": self.decision.model_dump(mode="json") if self.decision else None,
            "seconds": round(self.seconds, 2),
        }

    def summary_text(self) -> str:
        ev = self.evaluation
        test = ev.counts.get("test", {})
        lines = [
            f"{self.model_name} v{self.version} ({self.status}{', reused' if self.reused else ''}); "
            f"{ev.pairing.upper()} pairs; test: {test.get('pairs', 0)} pairs, {test.get('units', 0)} units",
            f"  {ev.pairing_note}",
        ]
        lines += [f"  {r.name:<34} AUC {r.result.auc}" for r in [*ev.rows, *ev.missing_modality]]
        lines.append(f"  gain vs best single ({ev.best_single}): {_signed(ev.gain_vs_best_single)}")
        lines.append(f"  gain vs shuffled-pair control: {_signed(ev.gain_vs_shuffled_control)}")
        if self.decision is not None:
            lines.append(f"  registry: {self.decision.reason}")
        return "\n".join(lines)


def _signed(e: Estimate) -> str:
    return f"{e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"


def _row_json(r: FusionRow) -> dict[str, Any]:
    res = r.result
    return {
        "name": r.name,
        "pairs": r.pairs,
        "n": res.n,
        "units": res.n_patients,
        "auc": res.auc.to_dict(),
        "sensitivity": res.sensitivity.to_dict(),
        "specificity": res.specificity.to_dict(),
    }


def _comparison(rows: list[FusionRow], ev: FusionEvaluation | None) -> list[ComparisonRow]:
    gains = {}
    if ev is not None:
        gains = {"fusion": ev.gain_vs_best_single}
    return [
        ComparisonRow(
            name=r.name,
            auc=r.result.auc,
            sensitivity=r.result.sensitivity,
            specificity=r.result.specificity,
            n=r.result.n,
            gain_vs_best_single=gains.get(r.key),
            note=r.description,
        )
        for r in rows
    ]


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
