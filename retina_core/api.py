"""The library's verbs as plain Python: what the Prefect tasks wrap, and what tests call.

Each verb takes the one :class:`Settings` object and opens what it needs from it, so a
task can run in another process (a Dask worker) with nothing but picklable arguments.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine

from retina_core.catalog.db import make_engine, migrate
from retina_core.catalog.repository import IngestSummary, register_ingest
from retina_core.config import Settings
from retina_core.data.ingest import FileOutcome, process_candidate
from retina_core.data.sources import SCANNERS, Candidate
from retina_core.domain import Source
from retina_core.landing import open_landing
from retina_core.progress import ShardDone, StageFinished, StageStarted, emit
from retina_core.storage import ObjectStore, open_store

_ENGINES: dict[str, Engine] = {}


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


def scan_source(settings: Settings, source: Source, location: str) -> list[Candidate]:
    """Every candidate file of a landing location; starts the ``ingest SOURCE`` stage that :func:`register` ends."""
    emit(StageStarted(f"ingest {source}"))
    landing, manifest = open_landing(location, source, settings)
    if source is Source.PAIRS and manifest is not None:
        candidates = list(SCANNERS[source](landing, manifest, limits=settings.ingest))
    else:
        candidates = list(SCANNERS[source](landing, limits=settings.ingest))
    emit(ShardDone(f"ingest {source}", items=0, total=len(candidates), seconds=0.0, unit="files"))
    return candidates


def process_candidates(
    settings: Settings, source: Source, location: str, candidates: Sequence[Candidate], *, threads: int = 4
) -> list[FileOutcome]:
    """Validate and store a batch of files; threads overlap I/O with decoding."""
    started = time.perf_counter()
    landing, _ = open_landing(location, source, settings)
    store = curated_store(settings)
    if threads <= 1 or len(candidates) <= 1:
        outcomes = [process_candidate(c, landing, store, settings.ingest) for c in candidates]
    else:
        with ThreadPoolExecutor(threads) as pool:
            outcomes = list(
                pool.map(lambda c: process_candidate(c, landing, store, settings.ingest), candidates)
            )
    seconds = time.perf_counter() - started
    emit(ShardDone(f"ingest {source}", items=len(outcomes), total=None, seconds=seconds, unit="files"))
    return outcomes


def register(
    settings: Settings, source: Source, location: str, outcomes: Sequence[FileOutcome]
) -> IngestSummary:
    summary = register_ingest(catalog_engine(settings), source, location, outcomes, settings.split)
    emit(StageFinished(f"ingest {source}"))
    return summary


def ingest(settings: Settings, source: Source, location: str) -> IngestSummary:
    """Scan, process and register one source without any orchestration."""
    candidates = scan_source(settings, source, location)
    outcomes = process_candidates(settings, source, location, candidates)
    return register(settings, source, location, outcomes)
