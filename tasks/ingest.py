"""Thin Prefect tasks over ``retina_core.api`` ingestion verbs."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from retina_core import api
from retina_core.catalog.repository import IngestSummary
from retina_core.config import Settings
from retina_core.data.ingest import FileOutcome
from retina_core.data.sources import Candidate
from retina_core.domain import Source
from tasks.retries import IO_RETRIES


@task(name="scan-source", cache_policy=NONE, **IO_RETRIES)
def scan_source(settings: Settings, source: Source, location: str) -> list[Candidate]:
    return api.scan_source(settings, source, location)


@task(name="ingest-files", cache_policy=NONE, **IO_RETRIES, task_run_name="ingest-files-{first}")
def ingest_files(
    settings: Settings, source: Source, location: str, candidates: list[Candidate], first: int = 0
) -> list[FileOutcome]:
    return api.process_candidates(settings, source, location, candidates)


@task(name="register-ingest", cache_policy=NONE, **IO_RETRIES)
def register_ingest(
    settings: Settings, source: Source, location: str, outcomes: list[FileOutcome]
) -> IngestSummary:
    return api.register(settings, source, location, outcomes)
