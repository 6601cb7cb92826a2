"""Thin Prefect tasks over the embedding verbs (``retina_core.verbs``): select, plan, embed a shard.

Retries are for what a retry can fix: a store or database that was briefly unreachable.
A computation that failed (bad weights, a damaged image) fails the same way again, so
:func:`tasks.retries.io_failure` keeps those from being retried.

Progress: planning a modality starts its ``embed MODALITY`` stage and a progress artifact;
each shard moves both on, and the stage ends when its last image is embedded. Shards are
counted in the flow's process (the default thread runner): on a Dask cluster they run in
worker processes that hold no count, so the artifact stays where it is until
:func:`publish_embed_artifacts` sets it to 100% at the end.
"""

from __future__ import annotations

import time

from prefect import task
from prefect.artifacts import create_progress_artifact, create_table_artifact
from prefect.cache_policies import NONE

from retina_core import progress, verbs
from retina_core.catalog.registry import ModelVersion
from retina_core.config import Settings
from retina_core.domain import Modality
from retina_core.results import EmbedPlan, EmbedReport
from tasks import embed_progress
from tasks.retries import IO_RETRIES


@task(name="select-encoders", cache_policy=NONE, **IO_RETRIES)
def select_encoders(settings: Settings) -> dict[Modality, ModelVersion]:
    return verbs.select_encoders(settings)


@task(name="plan-embeddings", cache_policy=NONE, task_run_name="plan-embeddings-{modality}", **IO_RETRIES)
def plan_embeddings(settings: Settings, modality: Modality, version: ModelVersion) -> EmbedPlan:
    plan = verbs.plan_embeddings(settings, modality, version)
    todo = len(plan.todo)
    artifact = create_progress_artifact(
        progress=0.0 if todo else 100.0,
        key=f"embed-{Modality(modality).value}-progress",
        description=f"{modality} embeddings: {todo} to compute, {plan.reused} reused from the cache",
    )
    embed_progress.open_tally(modality, artifact, todo)
    if todo:  # a modality whose embeddings are all cached has no stage to show (fusion re-checks them)
        progress.emit(progress.StageStarted(f"embed {modality}"))
    return plan


@task(name="embed-shard", cache_policy=NONE, task_run_name="embed-shard-{first}", **IO_RETRIES)
def embed_shard(settings: Settings, plan: EmbedPlan, items: dict[str, str], first: int = 0) -> int:
    started = time.perf_counter()
    count = verbs.embed_shard(settings, plan, items)
    embed_progress.shard_done(plan.modality, count, len(plan.todo), time.perf_counter() - started)
    return count


@task(name="publish-embed-artifacts", cache_policy=NONE)
def publish_embed_artifacts(report: EmbedReport) -> None:
    embed_progress.close_tallies()
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
            for s in report.stats
        ],
        description="Embedding cache: images embedded this run vs reused from earlier runs.",
    )
