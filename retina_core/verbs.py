"""The library's verbs: settings and ids in, a typed result out.

ingest, train, embed, train fusion, explain, report: each Prefect task in ``tasks/`` wraps
exactly one of these, and :mod:`retina_core.pipeline` composes the same ones without any
orchestration. A verb opens what it needs (catalog, object store) from the one
:class:`Settings` object, so a task can run in another process (a Dask worker) with nothing
but picklable arguments, and it returns one of the types in :mod:`retina_core.results`.

Map-style stages are split where an orchestrator fans them out: ingestion as scan →
process (per chunk) → register, embedding as select encoders → plan → embed (per shard).
Torch-heavy modules are imported inside the verbs, so importing this module stays cheap.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from retina_core.catalog.db import make_engine, migrate
from retina_core.catalog.registry import ModelVersion
from retina_core.catalog.repository import register_ingest as _register_ingest
from retina_core.config import Settings
from retina_core.data.dicom import DicomCandidate, process_dicom, read_label_book, scan_dicom
from retina_core.data.ingest import FileOutcome, process_candidate
from retina_core.data.sources import SCANNERS, Candidate
from retina_core.domain import Modality, Source
from retina_core.landing import open_landing
from retina_core.progress import ShardDone, StageFinished, StageStarted, emit, reports_stage
from retina_core.reporting.data import ExplainSection
from retina_core.results import EmbedPlan, EmbedReport, FusionReport, IngestSummary, TrainReport
from retina_core.storage import ObjectStore, open_store

if TYPE_CHECKING:
    from retina_core.drift import DriftReport
    from retina_core.drift.policy import RetrainDecision
    from retina_core.training.loop import BatchCallback, EpochCallback

_ENGINES: dict[str, Engine] = {}


# -- what every verb opens ---------------------------------------------------------------------


def catalog_engine(settings: Settings) -> Engine:
    """One migrated engine per database URL and process (engines pool connections)."""
    url = str(settings.database_url)
    if url not in _ENGINES:
        engine = make_engine(url)
        migrate(engine)
        _ENGINES[url] = engine
    return _ENGINES[url]


def curated_store(settings: Settings) -> ObjectStore:
    return open_store(str(settings.storage_url), s3_endpoint_url=settings.s3_endpoint_url)


# -- ingest ------------------------------------------------------------------------------------


def scan_source(
    settings: Settings, source: Source, location: str, labels: str | None = None
) -> list[Candidate]:
    """Every file the landing location offers, as candidates (nothing read or stored yet).

    ``labels`` is the DICOM source's sidecar CSV (None: ``labels.csv`` in the location).
    Starts the ``ingest SOURCE`` stage that :func:`register_ingest` ends.
    """
    emit(StageStarted(f"ingest {source}"))
    landing, manifest = open_landing(location, source, settings)
    if source is Source.DICOM:
        candidates: list[Candidate] = list(
            scan_dicom(landing, read_label_book(landing, labels, settings.split.key))
        )
    elif source is Source.PAIRS and manifest is not None:
        candidates = list(SCANNERS[source](landing, manifest))
    else:
        candidates = list(SCANNERS[source](landing))
    emit(ShardDone(f"ingest {source}", items=0, total=len(candidates), seconds=0.0, unit="files"))
    return candidates


def process_candidates(
    settings: Settings, source: Source, location: str, candidates: Sequence[Candidate], *, threads: int = 4
) -> list[FileOutcome]:
    """Validate and store a batch of files; threads overlap I/O with decoding."""
    started = time.perf_counter()
    landing, _ = open_landing(location, source, settings)
    store = curated_store(settings)

    def one(c: Candidate) -> list[FileOutcome]:
        if isinstance(c, DicomCandidate):  # one DICOM file may hold a whole volume of images
            return process_dicom(c, landing, store, settings.ingest, settings.split.key)
        return [process_candidate(c, landing, store, settings.ingest)]

    if threads <= 1 or len(candidates) <= 1:
        outcomes = [o for c in candidates for o in one(c)]
    else:
        with ThreadPoolExecutor(threads) as pool:
            outcomes = [o for done in pool.map(one, candidates) for o in done]
    seconds = time.perf_counter() - started
    emit(ShardDone(f"ingest {source}", items=len(outcomes), total=None, seconds=seconds, unit="files"))
    return outcomes


def register_ingest(
    settings: Settings, source: Source, location: str, outcomes: Sequence[FileOutcome]
) -> IngestSummary:
    """Catalogue one run's outcomes in a single transaction."""
    summary = _register_ingest(catalog_engine(settings), source, location, outcomes, settings.split)
    emit(StageFinished(f"ingest {source}"))
    return summary


def ingest(settings: Settings, source: Source, location: str, labels: str | None = None) -> IngestSummary:
    """Scan, process and register one source in this process."""
    candidates = scan_source(settings, source, location, labels)
    outcomes = process_candidates(settings, source, location, candidates)
    return register_ingest(settings, source, location, outcomes)


# -- train -------------------------------------------------------------------------------------


def train(
    settings: Settings,
    modality: Modality,
    *,
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
) -> TrainReport:
    """Train, evaluate and register one single-modality model (or reuse the one these inputs made)."""
    from retina_core.training.run import train_modality

    return train_modality(
        settings,
        modality,
        engine=catalog_engine(settings),
        store=curated_store(settings),
        on_epoch=on_epoch,
        on_batch=on_batch,
    )


# -- embed -------------------------------------------------------------------------------------


def select_encoders(settings: Settings) -> dict[Modality, ModelVersion]:
    """The encoder version per modality whose embeddings fusion uses."""
    from retina_core.fusion.embed import encoders_to_use

    return encoders_to_use(catalog_engine(settings))


def plan_embeddings(settings: Settings, modality: Modality, version: ModelVersion) -> EmbedPlan:
    """Verify one encoder's cache (evicting damaged shards) and list the images still missing."""
    from retina_core.fusion import embed as embedding

    return embedding.plan_embeddings(
        settings, catalog_engine(settings), curated_store(settings), modality, version
    )


def embed_shard(settings: Settings, plan: EmbedPlan, items: dict[str, str]) -> int:
    """Embed and store one shard's worth of a plan's images; returns how many."""
    from retina_core.fusion import embed as embedding

    return embedding.embed_chunk(settings, catalog_engine(settings), curated_store(settings), plan, items)


def embed(settings: Settings) -> EmbedReport:
    """Fill the embedding cache for both encoders in this process."""
    from retina_core.fusion.embed import embed_all

    return embed_all(settings, catalog_engine(settings), curated_store(settings))


# -- fusion ------------------------------------------------------------------------------------


def train_fusion(settings: Settings) -> FusionReport:
    """Train, compare and register the fusion head on the two frozen encoders."""
    from retina_core.fusion import train as fusion

    return fusion.train_fusion(settings, catalog_engine(settings), curated_store(settings))


# -- explain -----------------------------------------------------------------------------------


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def report_dir(settings: Settings, run_id: str) -> Path:
    return settings.home / "reports" / run_id


def explain(settings: Settings, name: str, version: int, run_id: str) -> ExplainSection:
    """CAMs, pointing game and ROAD for one registered classifier, written beside run ``run_id``'s report."""
    from retina_core.explain.stage import explain_registered

    return explain_registered(
        settings,
        catalog_engine(settings),
        curated_store(settings),
        name,
        version,
        report_dir(settings, run_id),
    )


def explain_fusion(settings: Settings, version: int, run_id: str) -> ExplainSection:
    """The fusion head's gallery on today's test pairs, written beside run ``run_id``'s report."""
    from retina_core.explain.fusion_stage import explain_fusion_registered

    return explain_fusion_registered(
        settings, catalog_engine(settings), curated_store(settings), version, report_dir(settings, run_id)
    )


# -- drift -------------------------------------------------------------------------------------


def check_drift(settings: Settings, dataset_version: int | None = None) -> DriftReport:
    """Newly landed images against what each champion was trained on: statistics, MMD, champion watch."""
    from retina_core.drift.check import check_drift as run_check

    return run_check(
        settings, catalog_engine(settings), curated_store(settings), dataset_version=dataset_version
    )


# -- report ------------------------------------------------------------------------------------


@reports_stage("report")
def write_report(
    settings: Settings,
    run_id: str,
    trains: Sequence[TrainReport],
    fusion: FusionReport | None,
    explanations: Sequence[ExplainSection],
    *,
    synthetic: bool,
    retrain: RetrainDecision | None = None,
) -> Path:
    """Write the self-contained HTML report locally and keep a copy in the object store.

    ``retrain`` is the policy's decision when the run was started by a trigger; the newest
    stored drift check is shown beside it.
    """
    from retina_core.drift.check import latest_drift_report
    from retina_core.reporting import write_report as render
    from retina_core.reporting.assemble import build_report_data

    store = curated_store(settings)
    data = build_report_data(
        run_id=run_id,
        engine=catalog_engine(settings),
        store=store,
        trains=trains,
        fusion=fusion,
        explanations=explanations,
        synthetic=synthetic,
    )
    data = data.model_copy(update={"drift": latest_drift_report(store), "retrain": retrain})
    path = render(data, report_dir(settings, run_id))
    for name in ("index.html", "report.json"):
        store.put_bytes(f"reports/{run_id}/{name}", (path.parent / name).read_bytes())
    return path


class NoReport(LookupError):
    """No stored report data for that run (or none at all)."""


def rerender_report(settings: Settings, run_id: str | None = None) -> Path:
    """Write a run's report again from its ``report.json`` (local copy, else the object store)."""
    from retina_core.reporting import ReportData
    from retina_core.reporting import write_report as render

    root = settings.home / "reports"
    store = curated_store(settings)
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
    folder = report_dir(settings, run_id)
    source = folder / "report.json"
    if source.exists():
        text = source.read_text()
    elif store.exists(f"reports/{run_id}/report.json"):
        text = store.get_bytes(f"reports/{run_id}/report.json").decode()
    else:
        raise NoReport(f"no report data for run {run_id}")
    return render(ReportData.from_json(text), folder)
