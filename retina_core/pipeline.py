"""The retrain pipeline as plain library calls: ingest → train fundus → train OCT → embed →
fusion → explain → report (registration happens inside each training stage).

``flows/pipeline.py`` composes the same stage verbs as Prefect tasks; this module is the
orchestration-free twin used by tests and by ``make bench`` to measure Prefect's
overhead. Stages pass ids and small reports, never tensors.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from retina_core import api
from retina_core.catalog.repository import IngestSummary
from retina_core.config import Settings
from retina_core.domain import Modality, Source
from retina_core.progress import reports_stage
from retina_core.reporting.data import ExplainSection

log = logging.getLogger(__name__)


class SourceSpec(BaseModel):
    source: Source
    location: str


class PipelineResult(BaseModel):
    run_id: str
    report_path: str
    ingested: list[dict[str, Any]]
    models: list[dict[str, Any]]
    fusion: dict[str, Any] | None
    skipped: str | None = None


RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""A plain id: it names a folder under ``reports/`` and an object-store prefix, so it can hold
no separator and cannot be ``..``. Flow parameters carry the same pattern."""
_RUN_ID = re.compile(RUN_ID_PATTERN)


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def check_run_id(run_id: str) -> str:
    """``run_id`` unchanged, or ValueError when it is not a plain id (``../../x``, ``a/b``)."""
    if not _RUN_ID.match(run_id):
        raise ValueError(
            f"run id {run_id!r} is not a plain id: 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return run_id


def report_dir(settings: Settings, run_id: str) -> Path:
    """The run's report folder; every path and key built from a run id goes through here first."""
    return settings.home / "reports" / check_run_id(run_id)


def stage_ingest(settings: Settings, source: Source, location: str) -> IngestSummary:
    return api.ingest(settings, source, location)


def stage_train(settings: Settings, modality: Modality) -> Any:
    from retina_core.training.run import train_modality

    return train_modality(
        settings, modality, engine=api.catalog_engine(settings), store=api.curated_store(settings)
    )


def stage_embed(settings: Settings) -> Any:
    from retina_core.fusion.embed import embed_all

    return embed_all(settings, api.catalog_engine(settings), api.curated_store(settings))


def stage_fusion(settings: Settings) -> Any:
    from retina_core.fusion.train import train_fusion

    return train_fusion(settings, api.catalog_engine(settings), api.curated_store(settings))


def stage_explain(settings: Settings, name: str, version: int, run_id: str) -> ExplainSection:
    from retina_core.explain.stage import explain_registered

    return explain_registered(
        settings,
        api.catalog_engine(settings),
        api.curated_store(settings),
        name,
        version,
        report_dir(settings, run_id),
    )


def stage_explain_fusion(settings: Settings, version: int, run_id: str) -> ExplainSection:
    from retina_core.explain.fusion_stage import explain_fusion_registered

    return explain_fusion_registered(
        settings,
        api.catalog_engine(settings),
        api.curated_store(settings),
        version,
        report_dir(settings, run_id),
    )


@reports_stage("report")
def stage_report(
    settings: Settings,
    run_id: str,
    trains: Sequence[Any],
    fusion: Any | None,
    explanations: Sequence[ExplainSection],
    *,
    synthetic: bool,
    retrain: Any | None = None,
) -> Path:
    """Write the self-contained HTML report locally and keep a copy in the object store.

    ``retrain`` is the policy's :class:`~retina_core.drift.policy.RetrainDecision` when the run
    was started by a trigger; the newest stored drift check is shown beside it.
    """
    from retina_core.drift.check import latest_drift_report
    from retina_core.reporting import write_report
    from retina_core.reporting.assemble import build_report_data

    store = api.curated_store(settings)
    data = build_report_data(
        run_id=run_id,
        engine=api.catalog_engine(settings),
        store=store,
        trains=trains,
        fusion=fusion,
        explanations=explanations,
        synthetic=synthetic,
    )
    data = data.model_copy(update={"drift": latest_drift_report(store), "retrain": retrain})
    path = write_report(data, report_dir(settings, run_id))  # checks run_id before any key is built
    for name in ("index.html", "report.json"):
        store.put_bytes(f"reports/{run_id}/{name}", (path.parent / name).read_bytes())
    return path


def summarise(
    run_id: str, path: Path, ingested: Sequence[IngestSummary], trains: Sequence[Any], fusion: Any | None
) -> PipelineResult:
    return PipelineResult(
        run_id=run_id,
        report_path=str(path),
        ingested=[i.contract() for i in ingested],
        models=[
            {
                "model": t.model_name,
                "version": t.version,
                "status": t.status,
                "reused": t.reused,
                "primary_metric": t.evaluation.primary_metric,
                "primary": t.evaluation.primary.to_dict(),
            }
            for t in trains
        ],
        fusion=fusion.contract() if fusion is not None else None,
    )


def run_pipeline(
    settings: Settings, sources: Sequence[SourceSpec], *, run_id: str | None = None, synthetic: bool = False
) -> PipelineResult:
    run_id = run_id or new_run_id()
    ingested = [stage_ingest(settings, s.source, s.location) for s in sources]
    trains = [stage_train(settings, m) for m in (Modality.FUNDUS, Modality.OCT)]
    stage_embed(settings)
    fusion = stage_fusion(settings)
    explanations = [stage_explain(settings, t.model_name, t.version, run_id) for t in trains]
    if fusion is not None:
        explanations.append(stage_explain_fusion(settings, fusion.version, run_id))
    path = stage_report(settings, run_id, trains, fusion, explanations, synthetic=synthetic)
    return summarise(run_id, path, ingested, trains, fusion)


class NoReport(LookupError):
    """No stored report data for that run (or none at all)."""


def rerender_report(settings: Settings, run_id: str | None = None) -> Path:
    """Write a run's report again from its ``report.json`` (local copy, else the object store)."""
    from retina_core.reporting import ReportData, write_report

    root = settings.home / "reports"
    store = api.curated_store(settings)
    if run_id is None:
        local = (
            sorted(p.name for p in root.glob("*") if (p / "report.json").exists()) if root.exists() else []
        )
        stored = sorted(
            {i.key.split("/")[1] for i in store.list("reports/") if i.key.endswith("report.json")}
        )
        runs = sorted(set(local) | set(stored))
        if not runs:
            raise NoReport(f"no pipeline report yet under {root} or reports/ in the store")
        run_id = runs[-1]
    folder = report_dir(settings, run_id)  # raises ValueError before any path is touched
    source = folder / "report.json"
    if source.exists():
        text = source.read_text()
    elif store.exists(f"reports/{run_id}/report.json"):
        text = store.get_bytes(f"reports/{run_id}/report.json").decode()
    else:
        raise NoReport(f"no report data for run {run_id}")
    return write_report(ReportData.from_json(text), folder)
