"""Thin Prefect tasks over the ingestion verbs (``retina_core.verbs``): scan, process a chunk, register.

Candidates and outcomes pass between them through spool files in the flow's process, never
as lists of task parameters or results: Prefect walks every parameter and result object
(and remembers each result's items), which for a manifest of a million rows costs more
time and memory than the ingest itself.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from retina_core import verbs
from retina_core.config import Settings
from retina_core.data.sources import Candidate
from retina_core.domain import Source
from retina_core.results import IngestSummary
from tasks.retries import IO_RETRIES


@task(name="scan-source", cache_policy=NONE, **IO_RETRIES)
def scan_source(
    settings: Settings, source: Source, location: str, spool: str, labels: str | None = None
) -> int:
    """Write the candidates to the file ``spool`` (from its start again on a retry); how many."""
    with open(spool, "wb") as fh:
        return verbs.spool_scan(settings, source, location, fh, labels)


@task(name="ingest-files", cache_policy=NONE, task_run_name="ingest-files-{first}", **IO_RETRIES)
def ingest_files(
    settings: Settings, source: Source, location: str, candidates: list[Candidate], first: int = 0
) -> bytes:
    """One chunk's outcomes as a spool record (:func:`retina_core.verbs.spool_record`)."""
    return verbs.spool_record(verbs.process_candidates(settings, source, location, candidates))


@task(name="register-ingest", cache_policy=NONE, **IO_RETRIES)
def register_ingest(settings: Settings, source: Source, location: str, spool: str) -> IngestSummary:
    """Catalogue the outcomes spooled in the file ``spool``, streamed back in one transaction."""
    with open(spool, "rb") as fh:
        return verbs.register_ingest(settings, source, location, verbs.unspool(fh))
