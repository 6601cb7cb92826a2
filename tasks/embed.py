"""Thin Prefect tasks over the embedding verbs (``retina_core.fusion.embed``).

Retries are for what a retry can fix: a store or database that was briefly unreachable.
A computation that failed (bad weights, a damaged image) fails the same way again, so
:func:`tasks.retries.io_failure` keeps those from being retried.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from retina_core import api
from retina_core.catalog.registry import ModelVersion
from retina_core.config import Settings
from retina_core.domain import Modality
from retina_core.fusion import embed
from tasks.retries import IO_RETRIES


@task(name="select-encoders", cache_policy=NONE, **IO_RETRIES)
def select_encoders(settings: Settings) -> dict[Modality, ModelVersion]:
    return embed.encoders_to_use(api.catalog_engine(settings))


@task(name="plan-embeddings", cache_policy=NONE, task_run_name="plan-embeddings-{modality}", **IO_RETRIES)
def plan_embeddings(settings: Settings, modality: Modality, version: ModelVersion) -> embed.EmbedPlan:
    return embed.plan_embeddings(
        settings, api.catalog_engine(settings), api.curated_store(settings), modality, version
    )


@task(name="embed-shard", cache_policy=NONE, task_run_name="embed-shard-{first}", **IO_RETRIES)
def embed_shard(settings: Settings, plan: embed.EmbedPlan, items: dict[str, str], first: int = 0) -> int:
    return embed.embed_chunk(settings, api.catalog_engine(settings), api.curated_store(settings), plan, items)


@task(name="publish-embed-artifacts", cache_policy=NONE)
def publish_embed_artifacts(report: embed.EmbedReport) -> None:
    create_table_artifact(
        key="embedding-cache",
        table=[
            {
                "modality": s.modality.value,
                "encoder": f"{s.model_name} v{s.version}",
                "cache_key": s.cache_key,
                "computed": s.computed,
                "reused": s.reused,
                "damaged_shards_evicted": len(s.evicted_shards),
            }
            for s in (report.fundus, report.oct)
        ],
        description="Embedding cache: images embedded this run vs reused from earlier runs.",
    )
