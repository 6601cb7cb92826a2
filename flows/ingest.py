"""The ``ingest`` flow: scan a landing location, validate files in mapped chunks, register.

Per-file work is mapped over chunks of files so that a Dask task runner fans it out
across workers without code changes; registration is one catalog transaction at the
end. When new images were accepted the flow emits ``retina.dataset.updated``, which
the ``retrain-pipeline`` deployment's trigger listens for.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event
from pydantic import Field

from flows.common import RunConfig
from flows.fanout import chunk_mapper
from retina_core.domain import Source
from retina_core.results import IngestSummary
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
    chunk_size: int = Field(64, ge=1, le=10_000, description="Files per mapped ingestion task.")
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
    candidates = scan_source(settings, params.source, params.location, params.labels)
    chunks = [candidates[i : i + params.chunk_size] for i in range(0, len(candidates), params.chunk_size)]
    with chunk_mapper(settings.orchestration) as map_chunks:
        results = map_chunks(
            ingest_files,
            {"settings": settings, "source": params.source, "location": params.location},
            {"candidates": chunks, "first": [i * params.chunk_size for i in range(len(chunks))]},
        )
    outcomes = [outcome for chunk in results for outcome in chunk]
    summary = register_ingest(settings, params.source, params.location, outcomes)
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
