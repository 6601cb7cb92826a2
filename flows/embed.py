"""The ``embed`` flow: fill the embedding cache for the encoders fusion will use.

Per modality: plan (verify the shards, evict damaged ones, list what is missing), then
embed the missing images in shard-sized chunks mapped over the task runner, so a Dask
runner spreads them over workers without code changes. A second run with the same
encoders maps nothing.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from pydantic import Field

from flows.common import RunConfig
from flows.fanout import chunk_mapper
from retina_core.domain import Modality
from retina_core.fusion.embed import stats_of
from retina_core.results import EmbedReport, EmbedStats
from tasks.embed import embed_shard, plan_embeddings, publish_embed_artifacts, select_encoders


class EmbedParams(RunConfig):
    shard_size: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Embeddings per shard and per mapped task; None keeps the settings'.",
    )
    batch_size: int | None = Field(
        None, ge=1, le=4096, description="Images per forward pass; None keeps the settings'."
    )
    modality: Modality | None = Field(
        None, description="Embed one modality's images only (one GPU run each); None embeds both."
    )

    def modalities(self) -> list[Modality]:
        return list(Modality) if self.modality is None else [self.modality]

    def overrides(self) -> dict[str, Any]:
        return {"embed": {"shard_size": self.shard_size, "batch_size": self.batch_size}}


def _run_name() -> str:
    """``embed-fundus`` / ``embed-oct`` for a one-modality (dispatched) run, ``embed`` for both."""
    from prefect.runtime import flow_run

    params = flow_run.parameters.get("params")
    modality = params.get("modality") if isinstance(params, dict) else getattr(params, "modality", None)
    return f"embed-{Modality(modality).value}" if modality else "embed"


@flow(name="embed", flow_run_name=_run_name, log_prints=False)
def embed_flow(params: EmbedParams) -> EmbedReport:
    settings = params.settings()
    logger = get_run_logger()
    versions = select_encoders(settings)
    stats: dict[Modality, EmbedStats] = {}
    size = settings.embed.shard_size
    with chunk_mapper(settings.orchestration) as map_chunks:
        for modality in params.modalities():
            started = time.perf_counter()
            plan = plan_embeddings(settings, modality, versions[modality])
            chunks = plan.chunks(size)
            computed = sum(
                map_chunks(
                    embed_shard,
                    {"settings": settings, "plan": plan},
                    {"items": chunks, "first": [i * size for i in range(len(chunks))]},
                )
            )
            stats[modality] = stats_of(plan, computed, time.perf_counter() - started)
            logger.info("%s: %d embeddings computed, %d reused", modality, computed, plan.reused)
    report = EmbedReport(fundus=stats.get(Modality.FUNDUS), oct=stats.get(Modality.OCT))
    publish_embed_artifacts(report)
    return report
