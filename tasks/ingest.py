"""Thin Prefect tasks over the ingestion verbs (``retina_core.verbs``): scan, process a chunk, register."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from retina_core import verbs
from retina_core.config import Settings
from retina_core.data.ingest import FileOutcome
from retina_core.data.sources import Candidate
from retina_core.domain import Source
from retina_core.results import IngestSummary
from tasks.retries import IO_RETRIES


@task(name="scan-source", cache_policy=NONE, **IO_RETRIES)
def scan_source(
    settings: Settings, source: Source, location: str, labels: str | None = None
) -> list[Candidate]:
    return verbs.scan_source(settings, source, location, labels)


@task(name="ingest-files", cache_policy=NONE, task_run_name="ingest-files-{first}", **IO_RETRIES)
def ingest_files(
    settings: Settings, source: Source, location: str, candidates: list[Candidate], first: int = 0
) -> list[FileOutcome]:
    return verbs.process_candidates(settings, source, location, candidates)


@task(name="register-ingest", cache_policy=NONE, **IO_RETRIES)
def register_ingest(
    settings: Settings, source: Source, location: str, outcomes: list[FileOutcome]
) -> IngestSummary:
    return verbs.register_ingest(settings, source, location, outcomes)
