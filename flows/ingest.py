"""The ``ingest`` flow: scan a landing location, validate files in mapped chunks, register.

Per-file work is mapped over chunks of files so that a Dask task runner fans it out
across workers without code changes; registration is one catalog transaction at the
end. Memory stays bounded whatever the manifest's length, as in ``verbs.ingest``: the scan
is spooled to a temporary file, chunks are read back and submitted a window at a time,
and each chunk's outcomes are appended to a second spool that registration streams. When new images were accepted the flow emits ``retina.dataset.updated``, which
the ``retrain-pipeline`` deployment's trigger listens for.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event
from pydantic import Field

from flows.common import RunConfig
from flows.fanout import chunk_mapper
from retina_core.domain import Source
from retina_core.results import IngestSummary
from retina_core.verbs import batches, unspool
from tasks.ingest import ingest_files, register_ingest, scan_source

DATASET_UPDATED = "retina.dataset.updated"


class IngestParams(RunConfig):
    source: Source = Field(
        Source.KERMANY, description="Layout of the landing location: aptos, kermany, pairs or dicom."
    )
    location: str = Field(
        "landing/kermany", description="Local folder (or pairs.csv) or s3://bucket/prefix to ingest from."
    )
    labels: str | None = Field(
        None,
        description="DICOM only: sidecar labels CSV (local path or a key in the location); "
        "default labels.csv in the location when there is one.",
    )
    chunk_size: int = Field(
        512,
        ge=1,
        le=10_000,
        description="Files per mapped ingestion task (each task run costs Prefect ~20 ms).",
    )
    emit: bool = Field(
        True,
        description="Emit retina.dataset.updated when new images were accepted (off inside the pipeline).",
    )


def dataset_event_payload(summary: IngestSummary) -> dict[str, Any]:
    return {
        "dataset_version": summary.dataset_version,
        "source": summary.source,
        "new_images": sum(summary.new_images.values()),
        "new_by_modality": summary.new_images,
        "new_pairs": summary.new_pairs,
        "quarantined": len(summary.quarantined),
    }


@flow(name="ingest", flow_run_name="ingest-{params.source}", log_prints=False)
def ingest_flow(params: IngestParams) -> IngestSummary:
    settings = params.settings()
    logger = get_run_logger()
    size = params.chunk_size
    with tempfile.TemporaryDirectory(prefix="retina-ingest-") as work:
        scanned, outcomes = Path(work) / "candidates", Path(work) / "outcomes"
        scan_source(settings, params.source, params.location, str(scanned), params.labels)
        fixed = {"settings": settings, "source": params.source, "location": params.location}
        with scanned.open("rb") as candidates, outcomes.open("wb") as spool:
            chunks = batches(unspool(candidates), size)
            calls = ({**fixed, "candidates": chunk, "first": i * size} for i, chunk in enumerate(chunks))
            with chunk_mapper(settings.orchestration) as map_chunks:
                for record in map_chunks.stream(ingest_files, calls):
                    spool.write(record)
        summary = register_ingest(settings, params.source, params.location, str(outcomes))
    logger.info(
        "ingested %s: %d new, %d known, %d quarantined, dataset version %s",
        params.source,
        summary.accepted,
        summary.already_known,
        len(summary.quarantined),
        summary.dataset_version,
    )
    if params.emit and (summary.accepted or summary.new_pairs):
        emit_event(
            event=DATASET_UPDATED,
            resource={"prefect.resource.id": f"retina.dataset.{summary.dataset_version}"},
            payload=dataset_event_payload(summary),
        )
    return summary
