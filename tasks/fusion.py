"""Thin Prefect tasks over the fusion verbs (``retina_core.fusion.train``)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from retina_core import api
from retina_core.config import Settings
from retina_core.fusion import train
from retina_core.fusion.report import FusionReport, fusion_markdown
from tasks.retries import IO_RETRIES


@task(name="train-fusion", cache_policy=NONE, **IO_RETRIES)
def train_fusion(settings: Settings) -> FusionReport:
    return train.train_fusion(settings, api.catalog_engine(settings), api.curated_store(settings))


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
