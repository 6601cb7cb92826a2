"""Thin Prefect tasks for the explain and report stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from retina_core import pipeline
from retina_core.config import Settings
from retina_core.drift.policy import RetrainDecision
from retina_core.reporting.data import ExplainSection
from tasks.retries import IO_RETRIES


@task(name="explain", cache_policy=NONE, task_run_name="explain-{name}-v{version}", **IO_RETRIES)
def explain_task(settings: Settings, name: str, version: int, run_id: str) -> ExplainSection:
    return pipeline.stage_explain(settings, name, version, run_id)


@task(name="explain-fusion", cache_policy=NONE, task_run_name="explain-fusion_head-v{version}", **IO_RETRIES)
def explain_fusion_task(settings: Settings, version: int, run_id: str) -> ExplainSection:
    return pipeline.stage_explain_fusion(settings, version, run_id)


@task(name="write-report", cache_policy=NONE, retries=2, retry_delay_seconds=[2, 10])
def report_task(
    settings: Settings,
    run_id: str,
    trains: list[Any],
    fusion: Any | None,
    explanations: list[ExplainSection],
    synthetic: bool,
    retrain: RetrainDecision | None = None,
) -> Path:
    return pipeline.stage_report(
        settings, run_id, trains, fusion, explanations, synthetic=synthetic, retrain=retrain
    )
