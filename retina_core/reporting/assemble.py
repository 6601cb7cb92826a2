"""Gather one pipeline run's results into :class:`ReportData` (pure glue; no new numbers).

Every figure in the report comes from an object computed in this run — evaluation
results, training histories, registry decisions, explanation summaries — or from the
catalog; nothing here computes a metric of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from retina_core.catalog.registry import Decision
from retina_core.catalog.repository import export_images, latest_dataset_version, quarantine_counts
from retina_core.evaluation.bootstrap import Estimate
from retina_core.models.persist import read_spec
from retina_core.reporting.data import (
    DataSummary,
    ExplainSection,
    ModelSection,
    RegistryDecision,
    ReportData,
    TrainingCurves,
    count_classes,
)
from retina_core.reporting.model_card import build_model_card
from retina_core.storage import ObjectStore

NOTES_SYNTHETIC = (
    "All images are synthetic (retina synth): the numbers show that the pipeline works and how it "
    "measures, not how a model performs on patients."
)


def data_summary(engine: Engine, pairing: str | None = None, n_pairs: int | None = None) -> DataSummary:
    rows = export_images(engine)
    counts = count_classes((r["modality"], r["split"], r["label"]) for r in rows if r["label"] is not None)
    return DataSummary(counts=counts, quarantined=quarantine_counts(engine), pairing=pairing, n_pairs=n_pairs)


def _estimate(value: float | None, ci: tuple[float | None, float | None] | None, n: int) -> Estimate | None:
    if value is None:
        return None
    low, high = ci or (None, None)
    nan = float("nan")
    return Estimate(
        value=value, low=nan if low is None else low, high=nan if high is None else high, n_units=n
    )


def registry_section(decision: Decision | None, n_units: int) -> RegistryDecision | None:
    if decision is None:
        return None
    candidate = _estimate(decision.candidate_value, decision.candidate_ci, n_units)
    if candidate is None:
        candidate = Estimate(float("nan"), float("nan"), float("nan"), n_units)
    return RegistryDecision(
        status="champion" if decision.promoted else "candidate",
        metric=decision.metric,
        candidate=candidate,
        champion_version=None if decision.champion_version is None else str(decision.champion_version),
        champion=_estimate(decision.champion_value, decision.champion_ci, n_units),
        margin=decision.margin,
        reason=decision.reason,
    )


def _split_class_counts(summary: DataSummary, modality: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in summary.counts:
        if c.modality.value == modality:
            out.setdefault(c.split.value, {})[c.label_name] = c.count
    return out


def train_section(
    report: Any, store: ObjectStore, summary: DataSummary, *, synthetic: bool, dataset_version: int | None
) -> ModelSection:
    """A model section from a ``TrainReport`` (single-modality classifier)."""
    prefix = f"models/{report.model_name}/{report.version}"
    spec = read_spec(store, prefix)
    history = report.history
    evaluation = report.evaluation
    return ModelSection(
        name=report.model_name,
        version=str(report.version),
        architecture=spec.architecture,
        image_size=spec.image_size,
        evaluation=evaluation,
        curves=TrainingCurves(
            train_loss=[h["train_loss"] for h in history],
            val_loss=[h["val_loss"] for h in history],
            val_metric=[h["val_metric"] for h in history],
            val_metric_name=evaluation.primary_metric,
        )
        if history
        else None,
        registry=registry_section(report.decision, evaluation.primary.n_units),
        volume_level=report.extras.get("volume_level"),
        model_card=build_model_card(
            evaluation,
            spec.to_dict(),
            _split_class_counts(summary, report.modality),
            version=str(report.version),
            dataset_version=None if dataset_version is None else str(dataset_version),
            synthetic=synthetic,
            starting_weights=report.extras.get("starting_weights"),
        ),
    )


def fusion_section(
    fusion: Any, store: ObjectStore, *, synthetic: bool, dataset_version: int | None
) -> ModelSection:
    """A model section from a ``FusionReport`` (the head on the two frozen encoders)."""
    ev = fusion.evaluation
    result = ev.row("fusion").result
    spec = {
        "name": fusion.model_name,
        "architecture": f"{ev.head} on frozen encoder embeddings",
        "modality": "fundus + OCT embeddings",
        "label_names": ["normal", "disease"],
    }
    counts = {
        split: {"pairs": c.get("pairs", 0), "diseased": c.get("diseased", 0)}
        for split, c in ev.counts.items()
    }
    return ModelSection(
        name=fusion.model_name,
        version=str(fusion.version),
        architecture=spec["architecture"],
        evaluation=result,
        curves=TrainingCurves(
            train_loss=[h.get("train_loss", float("nan")) for h in ev.history],
            val_loss=[h.get("val_loss", float("nan")) for h in ev.history],
            val_metric=[h.get("val_auc", h.get("val_metric", float("nan"))) for h in ev.history],
            val_metric_name="auc",
        )
        if ev.history
        else None,
        registry=registry_section(fusion.decision, result.n_patients),
        model_card=build_model_card(
            result,
            spec,
            counts,
            version=str(fusion.version),
            dataset_version=None if dataset_version is None else str(dataset_version),
            synthetic=synthetic,
            pairing=str(ev.pairing),
        ),
    )


def build_report_data(
    *,
    run_id: str,
    engine: Engine,
    store: ObjectStore,
    trains: Sequence[Any],
    fusion: Any | None = None,
    explanations: Sequence[ExplainSection] = (),
    synthetic: bool = False,
    notes: Sequence[str] = (),
) -> ReportData:
    dataset_version = latest_dataset_version(engine)
    pairing = str(fusion.pairing) if fusion is not None else None
    n_pairs = (
        sum(c.get("pairs", 0) for c in fusion.evaluation.counts.values()) if fusion is not None else None
    )
    summary = data_summary(engine, pairing, n_pairs)
    multitask = getattr(fusion, "multitask", None)
    models = [
        train_section(t, store, summary, synthetic=synthetic, dataset_version=dataset_version) for t in trains
    ]
    all_notes = ([NOTES_SYNTHETIC] if synthetic else []) + list(notes)
    if fusion is not None:
        models.append(fusion_section(fusion, store, synthetic=synthetic, dataset_version=dataset_version))
        all_notes.append(fusion.evaluation.pairing_note)
    return ReportData(
        run_id=run_id,
        created_at=datetime.now(UTC),
        dataset_version=None if dataset_version is None else str(dataset_version),
        synthetic=synthetic,
        data_summary=summary,
        models=models,
        fusion_comparison=fusion.comparison_rows() if fusion is not None else None,
        missing_modality=fusion.missing_modality_rows() if fusion is not None else None,
        modality_share=fusion.evaluation.modality_share if fusion is not None else None,
        multitask=multitask.report_section() if multitask is not None else None,
        explanations=list(explanations) or None,
        notes=all_notes,
    )
