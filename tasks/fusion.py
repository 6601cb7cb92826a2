"""Thin Prefect tasks over the fusion verb (``retina_core.verbs.train_fusion``) and its artifacts."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from retina_core import verbs
from retina_core.config import Settings
from retina_core.fusion.report import fusion_markdown
from retina_core.results import FusionReport, MultiTaskReport
from tasks.retries import IO_RETRIES


@task(name="train-fusion", cache_policy=NONE, **IO_RETRIES)
def train_fusion(settings: Settings) -> FusionReport:
    return verbs.train_fusion(settings)


@task(name="train-multitask-fusion", cache_policy=NONE, **IO_RETRIES)
def train_multitask_fusion(settings: Settings) -> MultiTaskReport:
    return verbs.train_multitask_fusion(settings)


@task(name="publish-fusion-artifacts", cache_policy=NONE)
def publish_fusion_artifacts(report: FusionReport) -> None:
    create_markdown_artifact(
        key="fusion-comparison",
        markdown=fusion_markdown(report),
        description=f"Fusion on {report.pairing} pairs vs single modalities, same test pairs.",
    )
    create_table_artifact(
        key="fusion-comparison-table",
        table=report.table(),
        description="Every row with AUC, sensitivity and specificity (95% CI, patient bootstrap).",
    )
