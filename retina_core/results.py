"""What each library verb returns, defined once: pydantic data, free of torch.

Tasks hand these between stages, flows return them, and each one carries the JSON object
the ``retina`` command prints for it (``contract()``) and its human summary
(``summary_text()``), so the command line never assembles results by hand. Nothing here
imports torch or Prefect: a client that only reads results (a UI, a script) stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from retina_core.catalog.registry import Decision
from retina_core.domain import Modality, Source
from retina_core.evaluation import BinaryResult, Estimate
from retina_core.evaluation.result import EvaluationResult
from retina_core.reporting.data import ComparisonRow, MultiTaskRow, MultiTaskSection
from retina_core.reporting.modality_share import ModalityShareSummary

_JSON = TypeAdapter(dict[str, Any])
"""Pydantic's JSON mode for plain dicts (NaN becomes null), as the pipeline's output always was."""


# -- ingest ----------------------------------------------------------------------------------


class QuarantineEntry(BaseModel):
    path: str
    reason: str
    """``code: detail``; the code before the colon is stable."""


class IngestSummary(BaseModel):
    source: str
    location: str
    scanned: int
    accepted: int = Field(description="Images new to the catalog in this run.")
    already_known: int = Field(description="Valid images whose content was already catalogued.")
    duplicates: int = Field(description="Files whose content repeated another file of this run.")
    quarantined: list[QuarantineEntry]
    dataset_version: int | None
    new_images: dict[str, int] = Field(default_factory=dict, description="New images per modality.")
    new_pairs: int = 0
    split_balance: dict[str, dict[str, dict[int, int]]] = Field(default_factory=dict)

    def contract(self) -> dict[str, Any]:
        """The JSON object of ``retina ingest --json``, exactly."""
        return {
            "source": self.source,
            "scanned": self.scanned,
            "accepted": self.accepted,
            "already_known": self.already_known,
            "duplicates": self.duplicates,
            "quarantined": [q.model_dump() for q in self.quarantined],
            "dataset_version": self.dataset_version,
        }

    def summary_text(self) -> str:
        lines = [
            f"{self.source}: scanned {self.scanned}, accepted {self.accepted}, "
            f"already known {self.already_known}, duplicates {self.duplicates}, "
            f"quarantined {len(self.quarantined)}; dataset version {self.dataset_version}"
        ]
        lines += [f"  quarantined {q.path}: {q.reason}" for q in self.quarantined]
        return "\n".join(lines)


class SourceSpec(BaseModel):
    """One landing location the pipeline ingests first."""

    source: Source
    location: str


# -- embed -----------------------------------------------------------------------------------


class EmbedPlan(BaseModel):
    """What one modality's embedding run has to do; small and picklable, so tasks can pass it on."""

    modality: Modality
    model_name: str
    version: int
    cache_key: str
    total: int = Field(description="Catalogued images of this modality.")
    todo: dict[str, str] = Field(description="sha256 -> object key of the images without an embedding.")
    evicted_shards: list[str] = Field(default_factory=list, description="Damaged shards dropped this run.")

    @property
    def reused(self) -> int:
        return self.total - len(self.todo)

    def chunks(self, size: int) -> list[dict[str, str]]:
        items = list(self.todo.items())
        return [dict(items[i : i + size]) for i in range(0, len(items), size)]


class EmbedStats(BaseModel):
    modality: Modality
    model_name: str
    version: int
    cache_key: str
    computed: int
    reused: int
    evicted_shards: list[str] = Field(default_factory=list)
    seconds: float = 0.0


class EmbedReport(BaseModel):
    """One embed run; a modality left out (an ``embed`` child run per modality) is None."""

    fundus: EmbedStats | None = None
    oct: EmbedStats | None = None

    @property
    def stats(self) -> list[EmbedStats]:
        return [s for s in (self.fundus, self.oct) if s is not None]

    @property
    def computed(self) -> int:
        return sum(s.computed for s in self.stats)

    @property
    def reused(self) -> int:
        return sum(s.reused for s in self.stats)

    def contract(self) -> dict[str, object]:
        """The JSON object of ``retina embed --json``."""
        return {
            "computed": self.computed,
            "reused": self.reused,
            "modalities": {s.modality.value: s.model_dump(mode="json") for s in self.stats},
        }

    def summary_text(self) -> str:
        return "\n".join(
            f"{s.modality.value}: {s.model_name} v{s.version} (cache {s.cache_key}): "
            f"{s.computed} computed, {s.reused} reused"
            + (f", {len(s.evicted_shards)} damaged shards evicted" if s.evicted_shards else "")
            for s in self.stats
        )


# -- train -----------------------------------------------------------------------------------


class TrainReport(BaseModel):
    modality: str
    model_name: str
    version: int
    status: str
    reused: bool
    run_key: str
    data_version: int | None
    counts: dict[str, int]
    history: list[dict[str, float]]
    best_epoch: int
    resumed_from: int | None
    evaluation: EvaluationResult
    decision: Decision | None
    extras: dict[str, Any] = {}
    seconds: float

    def summary(self) -> dict[str, Any]:
        """This model's entry in ``retina pipeline --json``'s ``models``."""
        return {
            "model": self.model_name,
            "version": self.version,
            "status": self.status,
            "reused": self.reused,
            "primary_metric": self.evaluation.primary_metric,
            "primary": self.evaluation.primary.to_dict(),
        }

    def contract(self) -> dict[str, Any]:
        """The JSON object of ``retina train fundus|oct --json``."""
        return {
            "model": self.model_name,
            "version": self.version,
            "status": self.status,
            "reused": self.reused,
            "data_version": self.data_version,
            "counts": self.counts,
            "primary_metric": self.evaluation.primary_metric,
            "primary": self.evaluation.primary.to_dict(),
            "evaluation": self.evaluation.model_dump(mode="json"),
            "decision": self.decision.model_dump(mode="json") if self.decision else None,
            "history": self.history,
            "seconds": round(self.seconds, 2),
        }

    def summary_text(self) -> str:
        ev = self.evaluation
        lvl = ev.image_level
        lines = [
            f"{self.model_name} v{self.version} ({self.status}{', reused' if self.reused else ''}); "
            f"data version {self.data_version}; images {self.counts}",
            f"  {ev.primary_metric}: {ev.primary}   (test split, 95% CI by patient bootstrap)",
        ]
        for label, est in (
            ("accuracy", lvl.accuracy),
            ("balanced accuracy", lvl.balanced_accuracy),
            ("macro-F1", lvl.macro_f1),
            (f"{ev.referable_name} sensitivity", lvl.referable_sensitivity),
            (f"{ev.referable_name} specificity", lvl.referable_specificity),
            ("normal-vs-disease AUC", lvl.disease_auc),
        ):
            lines.append(f"  {label}: {est}")
        if self.decision is not None:
            lines.append(f"  registry: {self.decision.reason}")
        return "\n".join(lines)


# -- fusion ----------------------------------------------------------------------------------

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
    modality_share: ModalityShareSummary | None = Field(
        None, description="Share of fused decisions owed to each modality, with the complementary-set check."
    )

    def row(self, key: str) -> FusionRow:
        for r in [*self.rows, *self.missing_modality]:
            if r.key == key:
                return r
        raise KeyError(key)


TASK_ROW_NAMES = {
    "fusion": "Multi-task head, both embeddings",
    "fusion_fundus_only": "Multi-task head, fundus only",
    "fusion_oct_only": "Multi-task head, OCT only",
    "shuffled_control": "Shuffled-pair control (same head)",
    "fundus_cnn_own": "Fundus encoder, its own prediction",
    "oct_cnn_own": "OCT encoder, its own prediction",
}


class TaskRow(_Data):
    """One row of the multi-task head's evaluation (all on the same test pairs but the control)."""

    key: str = Field(
        description="'fusion', 'fusion_fundus_only', 'fusion_oct_only', 'shuffled_control', or an "
        "encoder's own predictions: 'fundus_cnn_own', 'oct_cnn_own'."
    )
    inputs: str
    metrics: dict[str, dict[str, float]] = Field(
        description="grade_qwk, oct_macro_f1, disease_auc: value, low, high, n_units (an encoder's own "
        "row: its own task and disease_auc only)."
    )
    source: str | None = Field(None, description="An encoder's own row: the version that predicted.")


class MultiTaskReport(_Data):
    """What ``train_multitask_fusion`` returns: the registered version and its three metrics per row."""

    model_name: str = "fusion_multitask"
    version: int
    status: str
    reused: bool
    pairing: str
    rows: list[TaskRow]
    decision: Decision | None = None

    def row(self, key: str) -> TaskRow:
        return next(r for r in self.rows if r.key == key)

    def contract(self) -> dict[str, Any]:
        """The ``multitask`` object of ``retina train fusion --json``: every row's metrics with CIs."""
        return _JSON.dump_python(
            {
                "model": self.model_name,
                "version": self.version,
                "status": self.status,
                "reused": self.reused,
                "pairing": self.pairing,
                "primary_metric": "disease_auc",
                "primary": self.row("fusion").metrics["disease_auc"],
                "rows": {r.key: {"inputs": r.inputs, "source": r.source, **r.metrics} for r in self.rows},
                "decision": self.decision.model_dump(mode="json") if self.decision else None,
            },
            mode="json",
        )

    def report_section(self) -> MultiTaskSection:
        """The rows the HTML report's multi-task table takes."""

        def estimate(metrics: dict[str, dict[str, float]], key: str) -> Estimate | None:
            m = metrics.get(key)
            if m is None:
                return None
            return Estimate(m["value"], m["low"], m["high"], int(m["n_units"]), int(m.get("n_dropped", 0)))

        return MultiTaskSection(
            model=self.model_name,
            version=self.version,
            status=self.status,
            pairing=self.pairing,
            registry=self.decision.reason if self.decision else None,
            rows=[
                MultiTaskRow(
                    key=r.key,
                    name=TASK_ROW_NAMES.get(r.key, r.key),
                    inputs=r.inputs,
                    source=r.source,
                    grade_qwk=estimate(r.metrics, "grade_qwk"),
                    oct_macro_f1=estimate(r.metrics, "oct_macro_f1"),
                    disease_auc=estimate(r.metrics, "disease_auc"),
                )
                for r in self.rows
            ],
        )

    def summary_text(self) -> str:
        m = self.row("fusion").metrics

        def fmt(k: str) -> str:
            return f"{m[k]['value']:.3f} [{m[k]['low']:.3f}, {m[k]['high']:.3f}]"

        line = (
            f"{self.model_name} v{self.version} ({self.status}, {self.pairing} pairs): "
            f"grade QWK {fmt('grade_qwk')}, OCT macro-F1 {fmt('oct_macro_f1')}, disease AUC {fmt('disease_auc')}"
        )
        own = {r.key: r for r in self.rows if r.source}
        if "fundus_cnn_own" in own and "oct_cnn_own" in own:
            f, o = own["fundus_cnn_own"].metrics, own["oct_cnn_own"].metrics

            def est(d: dict[str, float]) -> str:
                return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"

            line += (
                f"\n  encoders' own predictions on the same test pairs: {own['fundus_cnn_own'].source} "
                f"grade QWK {est(f['grade_qwk'])}; {own['oct_cnn_own'].source} OCT macro-F1 {est(o['oct_macro_f1'])}"
            )
        return line


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
    multitask: MultiTaskReport | None = Field(
        None, description="The multi-task head trained in the same run (RETINA_FUSION__MULTITASK)."
    )

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
            "multitask": self.multitask.contract() if self.multitask is not None else None,
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
        if self.multitask is not None:
            lines.append(self.multitask.summary_text())
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


# -- the pipeline ----------------------------------------------------------------------------


class PipelineResult(BaseModel):
    """A retrain-pipeline run: what each stage returned, and where the report is."""

    run_id: str
    report_path: str
    ingested: list[IngestSummary] = Field(default_factory=list)
    models: list[TrainReport] = Field(default_factory=list)
    fusion: FusionReport | None = None
    skipped: str | None = None

    def contract(self) -> dict[str, Any]:
        """The JSON object of ``retina pipeline --json`` and ``retina demo --json``."""
        return _JSON.dump_python(
            {
                "run_id": self.run_id,
                "report_path": self.report_path,
                "ingested": [i.contract() for i in self.ingested],
                "models": [t.summary() for t in self.models],
                "fusion": self.fusion.contract() if self.fusion is not None else None,
                "skipped": self.skipped,
            },
            mode="json",
        )

    def summary_text(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        lines = [f"run {self.run_id}"]
        for t in self.models:
            p = t.evaluation.primary
            lines.append(
                f"  {t.model_name} v{t.version} ({t.status}): {t.evaluation.primary_metric} "
                f"{p.value:.3f} [{p.low:.3f}, {p.high:.3f}]"
            )
        if self.fusion is not None:
            f = self.fusion
            p = f.evaluation.row("fusion").result.auc
            g = f.evaluation.gain_vs_best_single
            lines.append(
                f"  {f.model_name} v{f.version} ({f.status}, {f.pairing} pairs): AUC "
                f"{p.value:.3f} [{p.low:.3f}, {p.high:.3f}]; gain vs best single "
                f"{g.value:+.3f} [{g.low:+.3f}, {g.high:+.3f}]"
            )
            if f.multitask is not None:
                lines += ["  " + line for line in f.multitask.summary_text().splitlines()]
        lines.append(f"report: {Path(self.report_path).absolute().as_uri()}")
        return "\n".join(lines)
