"""Thin Prefect tasks over the explain and report verbs (``retina_core.verbs``)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from retina_core import verbs
from retina_core.config import Settings
from retina_core.drift.policy import RetrainDecision
from retina_core.reporting.data import ExplainSection
from retina_core.results import FusionReport, TrainReport
from tasks.retries import IO_RETRIES


@task(name="explain", cache_policy=NONE, task_run_name="explain-{name}-v{version}", **IO_RETRIES)
def explain_task(settings: Settings, name: str, version: int, run_id: str) -> ExplainSection:
    return verbs.explain(settings, name, version, run_id)


@task(name="explain-fusion", cache_policy=NONE, task_run_name="explain-fusion_head-v{version}", **IO_RETRIES)
def explain_fusion_task(settings: Settings, version: int, run_id: str) -> ExplainSection:
    return verbs.explain_fusion(settings, version, run_id)


@task(name="write-report", cache_policy=NONE, **IO_RETRIES)
def report_task(
    settings: Settings,
    run_id: str,
    trains: list[TrainReport],
    fusion: FusionReport | None,
    explanations: list[ExplainSection],
    synthetic: bool,
    retrain: RetrainDecision | None = None,
) -> Path:
    return verbs.write_report(
        settings, run_id, trains, fusion, explanations, synthetic=synthetic, retrain=retrain
    )
