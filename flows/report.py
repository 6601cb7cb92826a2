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


def _run_name() -> str:
    """``report-<run id>``, or ``report-latest`` when the newest run's report is asked for."""
    from prefect.runtime import flow_run

    params = flow_run.parameters.get("params")
    run_id = params.get("run_id") if isinstance(params, dict) else getattr(params, "run_id", None)
    return f"report-{run_id or 'latest'}"


@flow(name="report", flow_run_name=_run_name)
def report_flow(params: ReportParams) -> Path:
    path = rerender_report(params.settings(), params.run_id)
    create_link_artifact(key="retina-report", link=path.as_uri(), description="Self-contained HTML report")
    return path
