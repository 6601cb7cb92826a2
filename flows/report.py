"""The ``report`` flow: re-render a pipeline run's self-contained HTML report from its stored data."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_link_artifact
from pydantic import Field

from flows.common import RunConfig
from retina_core.verbs import rerender_report


class ReportParams(RunConfig):
    run_id: str | None = Field(None, description="Pipeline run whose report to write; the newest by default.")


@flow(name="report", flow_run_name="report-{params.run_id}")
def report_flow(params: ReportParams) -> Path:
    path = rerender_report(params.settings(), params.run_id)
    create_link_artifact(key="retina-report", link=path.as_uri(), description="Self-contained HTML report")
    return path
