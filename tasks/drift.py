"""Thin Prefect tasks over the drift-check verb (``retina_core.verbs.check_drift``) and its artifacts."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from retina_core import verbs
from retina_core.config import Settings
from retina_core.drift import DriftReport
from retina_core.reporting.drift import drift_markdown, drift_rows
from tasks.retries import IO_RETRIES


@task(name="check-drift", cache_policy=NONE, **IO_RETRIES)
def check_drift_task(settings: Settings, dataset_version: int | None) -> DriftReport:
    return verbs.check_drift(settings, dataset_version)


@task(name="publish-drift-artifacts", cache_policy=NONE)
def publish_drift_artifacts(report: DriftReport) -> None:
    create_markdown_artifact(
        key="retina-drift", markdown=drift_markdown(report), description="Drift check: verdict and every test"
    )
    rows = drift_rows(report)
    if rows:
        create_table_artifact(
            key="retina-drift-tests", table=rows, description="Drift tests, Holm-adjusted p-values"
        )
