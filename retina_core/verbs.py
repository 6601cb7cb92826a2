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

import pickle
import re
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

from sqlalchemy import Engine

from retina_core.catalog.db import make_engine, migrate
from retina_core.catalog.registry import ModelVersion
from retina_core.catalog.repository import register_ingest as _register_ingest
from retina_core.config import Settings
from retina_core.data.dicom import DicomCandidate, process_dicom, read_label_book, scan_dicom
from retina_core.data.ingest import FileOutcome, identity_problem, needs_bytes, process_candidate
from retina_core.data.sources import SCANNERS, Candidate
from retina_core.domain import Modality, Source
from retina_core.landing import open_landing
from retina_core.progress import ShardDone, StageFinished, StageStarted, emit, reports_stage
from retina_core.reporting.data import ExplainSection
from retina_core.results import (
    EmbedPlan,
    EmbedReport,
    FusionReport,
    IngestSummary,
    MultiTaskReport,
    TrainReport,
)
from retina_core.storage import ObjectStore, open_store

if TYPE_CHECKING:
    from retina_core.drift import DriftReport
    from retina_core.drift.policy import RetrainDecision
    from retina_core.training.loop import BatchCallback, EpochCallback

T = TypeVar("T")

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


CHUNK = 512
"""Candidates processed (and spooled) at a time by :func:`ingest`: its memory holds one chunk."""


def scan_candidates(
    settings: Settings, source: Source, location: str, labels: str | None = None
) -> Iterator[Candidate]:
    """Every file the landing location offers, as candidates, lazily (nothing read or stored yet).

    ``labels`` is the DICOM source's sidecar CSV (None: ``labels.csv`` in the location).
    """
    landing, manifest = open_landing(location, source, settings)
    if source is Source.DICOM:
        return scan_dicom(landing, read_label_book(landing, labels, settings.split.key, settings.ingest))
    if source is Source.PAIRS and manifest is not None:
        return SCANNERS[source](landing, manifest, limits=settings.ingest)
    return SCANNERS[source](landing, limits=settings.ingest)


def scan_source(
    settings: Settings, source: Source, location: str, labels: str | None = None
) -> list[Candidate]:
    """:func:`scan_candidates` as a list, for a location small enough to hold (see :func:`spool_scan`).

    Starts the ``ingest SOURCE`` stage that :func:`register_ingest` ends.
    """
    emit(StageStarted(f"ingest {source}"))
    candidates = list(scan_candidates(settings, source, location, labels))
    emit(ShardDone(f"ingest {source}", items=0, total=len(candidates), seconds=0.0, unit="files"))
    return candidates


def spool_scan(
    settings: Settings, source: Source, location: str, spool: IO[bytes], labels: str | None = None
) -> int:
    """Write the scan's candidates to ``spool`` (read back with :func:`unspool`); returns how many.

    Holds one :data:`CHUNK` of candidates at a time, however long the manifest; an
    orchestrator then maps chunks read back from the spool. Starts the ``ingest SOURCE``
    stage that :func:`register_ingest` ends, and announces the total.
    """
    emit(StageStarted(f"ingest {source}"))
    count = 0
    for chunk in batches(scan_candidates(settings, source, location, labels), CHUNK):
        spool.write(spool_record(chunk))
        count += len(chunk)
    emit(ShardDone(f"ingest {source}", items=0, total=count, seconds=0.0, unit="files"))
    return count


def spool_record(items: Sequence[object]) -> bytes:
    """One record of a spool: ``items`` pickled as a list (this process's own temporary file)."""
    return pickle.dumps(list(items), protocol=pickle.HIGHEST_PROTOCOL)


def unspool(spool: IO[bytes]) -> Iterator[T]:
    """The items of every record in ``spool`` from its current position, in order."""
    while True:
        try:
            yield from pickle.load(spool)
        except EOFError:
            return


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter), read as they are needed."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class _Processor:
    """Validate and store candidates, reading a file a manifest names many times only once.

    A pairs manifest may repeat the same image on thousands of rows; after its first
    acceptance in this run, a repeat reuses the verdict (hash, size, curated key) instead
    of reading, decoding and hashing the same bytes again.
    """

    def __init__(self, settings: Settings, source: Source, location: str, threads: int) -> None:
        self.landing, _ = open_landing(location, source, settings)
        self.store = curated_store(settings)
        self.settings = settings.ingest
        self.split_key = settings.split.key
        self.source = source
        self.threads = threads
        self.accepted: dict[tuple[str, str], FileOutcome] = {}

    def one(self, candidate: Candidate) -> list[FileOutcome]:
        """The candidate's outcomes: one per file, or one per frame of a DICOM volume."""
        if isinstance(candidate, DicomCandidate):
            return process_dicom(candidate, self.landing, self.store, self.settings, self.split_key)
        seen = self.accepted.get((candidate.path, candidate.modality))
        if seen is not None and candidate.problem is None and identity_problem(candidate) is None:
            return [replace(seen, candidate=candidate)]
        outcome = process_candidate(candidate, self.landing, self.store, self.settings)
        if outcome.accepted:
            self.accepted.setdefault((candidate.path, candidate.modality), outcome)
        return [outcome]

    def batch(self, candidates: Sequence[Candidate]) -> list[FileOutcome]:
        """Outcomes in order; only the files still to be read go to the threads (a thread
        hand-off costs more than deciding a missing file or a repeat in place)."""
        started = time.perf_counter()
        outcomes: list[list[FileOutcome] | None] = [None] * len(candidates)
        to_read: list[int] = []
        for i, c in enumerate(candidates):
            if needs_bytes(c) and (c.path, c.modality) not in self.accepted:
                to_read.append(i)
            else:
                outcomes[i] = self.one(c)
        if self.threads <= 1 or len(to_read) <= 1:
            for i in to_read:
                outcomes[i] = self.one(candidates[i])
        else:
            with ThreadPoolExecutor(self.threads) as pool:
                for i, outcome in zip(
                    to_read, pool.map(self.one, [candidates[i] for i in to_read]), strict=True
                ):
                    outcomes[i] = outcome
        assert all(group is not None for group in outcomes)
        done = [o for group in outcomes if group is not None for o in group]
        seconds = time.perf_counter() - started
        emit(ShardDone(f"ingest {self.source}", items=len(done), total=None, seconds=seconds, unit="files"))
        return done


def process_candidates(
    settings: Settings, source: Source, location: str, candidates: Sequence[Candidate], *, threads: int = 4
) -> list[FileOutcome]:
    """Validate and store a batch of files; threads overlap I/O with decoding."""
    return _Processor(settings, source, location, threads).batch(candidates)


def register_ingest(
    settings: Settings, source: Source, location: str, outcomes: Iterable[FileOutcome]
) -> IngestSummary:
    """Catalogue one run's outcomes in a single transaction."""
    summary = _register_ingest(catalog_engine(settings), source, location, outcomes, settings.split)
    emit(StageFinished(f"ingest {source}"))
    return summary


def ingest(settings: Settings, source: Source, location: str, labels: str | None = None) -> IngestSummary:
    """Scan, process and register one source in this process, in bounded memory.

    Candidates stream from the scan in chunks; each chunk's outcomes are spooled to a
    temporary file, and registration then streams them back in one short transaction (the
    catalog is not held locked while files are read). Memory holds one chunk, the hashes
    seen and the quarantine list the summary reports, never the whole manifest. ``labels`` is
    the DICOM source's sidecar CSV (None: ``labels.csv`` in the location).
    """
    emit(StageStarted(f"ingest {source}"))
    processor = _Processor(settings, source, location, threads=4)
    with tempfile.TemporaryFile(prefix="retina-ingest-") as spool:
        for chunk in batches(scan_candidates(settings, source, location, labels), CHUNK):
            spool.write(spool_record(processor.batch(chunk)))
        spool.seek(0)
        return register_ingest(settings, source, location, unspool(spool))


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


def registered_training(settings: Settings, modality: Modality) -> TrainReport:
    """What :func:`train` with these settings registered, read from the catalog (another process trained)."""
    from retina_core.training.run import registered_report

    return registered_report(
        settings, modality, engine=catalog_engine(settings), store=curated_store(settings)
    )


def latest_data_version(settings: Settings) -> int | None:
    """The catalog's newest dataset version (None before the first ingestion)."""
    from retina_core.catalog.repository import latest_dataset_version

    return latest_dataset_version(catalog_engine(settings))


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


def train_multitask_fusion(settings: Settings) -> MultiTaskReport:
    """Train, score and register the multi-task fusion head (grade, OCT class, disease)."""
    from retina_core.fusion.multitask_train import train_multitask_fusion as train

    return train(settings, catalog_engine(settings), curated_store(settings))


# -- explain -----------------------------------------------------------------------------------


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
