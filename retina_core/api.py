"""The library's verbs as plain Python: what the Prefect tasks wrap, and what tests call.

Each verb takes the one :class:`Settings` object and opens what it needs from it, so a
task can run in another process (a Dask worker) with nothing but picklable arguments.
"""

from __future__ import annotations

import pickle
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from itertools import islice
from typing import IO

from sqlalchemy import Engine

from retina_core.catalog.db import make_engine, migrate
from retina_core.catalog.repository import IngestSummary, register_ingest
from retina_core.config import Settings
from retina_core.data.ingest import FileOutcome, identity_problem, needs_bytes, process_candidate
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


CHUNK = 512
"""Candidates processed (and spooled) at a time by :func:`ingest`: its memory holds one chunk."""


def _candidates(settings: Settings, source: Source, location: str) -> Iterator[Candidate]:
    landing, manifest = open_landing(location, source, settings)
    if source is Source.PAIRS and manifest is not None:
        return SCANNERS[source](landing, manifest, limits=settings.ingest)
    return SCANNERS[source](landing, limits=settings.ingest)


def scan_source(settings: Settings, source: Source, location: str) -> list[Candidate]:
    """Every candidate file of a landing location; starts the ``ingest SOURCE`` stage that :func:`register` ends."""
    emit(StageStarted(f"ingest {source}"))
    candidates = list(_candidates(settings, source, location))
    emit(ShardDone(f"ingest {source}", items=0, total=len(candidates), seconds=0.0, unit="files"))
    return candidates


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
        self.source = source
        self.threads = threads
        self.accepted: dict[tuple[str, str], FileOutcome] = {}

    def one(self, candidate: Candidate) -> FileOutcome:
        seen = self.accepted.get((candidate.path, candidate.modality))
        if seen is not None and candidate.problem is None and identity_problem(candidate) is None:
            return replace(seen, candidate=candidate)
        outcome = process_candidate(candidate, self.landing, self.store, self.settings)
        if outcome.accepted:
            self.accepted.setdefault((candidate.path, candidate.modality), outcome)
        return outcome

    def batch(self, candidates: Sequence[Candidate]) -> list[FileOutcome]:
        """Outcomes in order; only the files still to be read go to the threads (a thread
        hand-off costs more than deciding a missing file or a repeat in place)."""
        started = time.perf_counter()
        outcomes: list[FileOutcome | None] = [None] * len(candidates)
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
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(candidates)
        seconds = time.perf_counter() - started
        emit(ShardDone(f"ingest {self.source}", items=len(done), total=None, seconds=seconds, unit="files"))
        return done


def process_candidates(
    settings: Settings, source: Source, location: str, candidates: Sequence[Candidate], *, threads: int = 4
) -> list[FileOutcome]:
    """Validate and store a batch of files; threads overlap I/O with decoding."""
    return _Processor(settings, source, location, threads).batch(candidates)


def register(
    settings: Settings, source: Source, location: str, outcomes: Iterable[FileOutcome]
) -> IngestSummary:
    summary = register_ingest(catalog_engine(settings), source, location, outcomes, settings.split)
    emit(StageFinished(f"ingest {source}"))
    return summary


def ingest(settings: Settings, source: Source, location: str) -> IngestSummary:
    """Scan, process and register one source without any orchestration, in bounded memory.

    Candidates stream from the scan in chunks; each chunk's outcomes are spooled to a
    temporary file, and registration then streams them back in one short transaction (the
    catalog is not held locked while files are read). Memory holds one chunk, the hashes
    seen and the quarantine list the summary reports, never the whole manifest.
    """
    emit(StageStarted(f"ingest {source}"))
    processor = _Processor(settings, source, location, threads=4)
    with tempfile.TemporaryFile(prefix="retina-ingest-") as spool:
        candidates = _candidates(settings, source, location)
        while chunk := list(islice(candidates, CHUNK)):
            pickle.dump(processor.batch(chunk), spool, protocol=pickle.HIGHEST_PROTOCOL)
        spool.seek(0)
        return register(settings, source, location, _unspool(spool))


def _unspool(spool: IO[bytes]) -> Iterator[FileOutcome]:
    """The outcomes :func:`ingest` spooled, in order (a file this process just wrote)."""
    while True:
        try:
            yield from pickle.load(spool)
        except EOFError:
            return
