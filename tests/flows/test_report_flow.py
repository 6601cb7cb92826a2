"""The report flow under Prefect's real ephemeral API: a stored run's report written again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from retina_core import verbs
from retina_core.config import Settings, write_settings_file
from retina_core.reporting import ReportData
from tests.flows.conftest import assert_form, flow_run_artifacts
from tests.reporting.helpers import Page


def _stored_run(run_id: str, note: str) -> ReportData:
    return ReportData(run_id=run_id, created_at=datetime(2024, 5, 1, tzinfo=UTC), notes=[note])


def flow_run_name(flow_run_id: object) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).name


def _config(settings: Settings) -> str:
    return str(settings.home.parent / "settings.yaml")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Two runs' report data: the older beside its report folder, the newer only in the store.

    The flow reads its settings from the file its form names, as a worker would.
    """
    settings = Settings(home=tmp_path / "home")
    write_settings_file(settings, tmp_path / "settings.yaml")
    older = settings.home / "reports" / "run-2024-a" / "report.json"
    older.parent.mkdir(parents=True)
    older.write_text(_stored_run("run-2024-a", "the older run").to_json())
    verbs.curated_store(settings).put_bytes(
        "reports/run-2024-b/report.json", _stored_run("run-2024-b", "the newer run").to_json().encode()
    )
    return settings


def test_report_flow_writes_the_newest_run_and_links_it(prefect_api: None, settings: Settings) -> None:
    from flows.report import ReportParams, report_flow

    state = report_flow(ReportParams(config_file=_config(settings)), return_state=True)

    assert state.is_completed()
    path = state.result()
    assert path == settings.home / "reports" / "run-2024-b" / "index.html"
    page = Page(path.read_text())
    assert "the newer run" in page.text["notes"] and "the older run" not in page.text["notes"]
    link = flow_run_artifacts(state.state_details.flow_run_id)["retina-report"]
    assert path.as_uri() in link.data
    assert flow_run_name(state.state_details.flow_run_id) == "report-latest"  # not "report-None"


def test_report_flow_writes_the_run_it_is_asked_for(prefect_api: None, settings: Settings) -> None:
    from flows.report import ReportParams, report_flow

    path = report_flow(ReportParams(run_id="run-2024-a", config_file=_config(settings)))

    assert path == settings.home / "reports" / "run-2024-a" / "index.html"
    assert "the older run" in Page(path.read_text()).text["notes"]
    assert not (settings.home / "reports" / "run-2024-b" / "index.html").exists()


def test_report_flow_fails_for_a_run_without_data(prefect_api: None, settings: Settings) -> None:
    from flows.report import ReportParams, report_flow
    from retina_core.verbs import NoReport

    state = report_flow(ReportParams(run_id="run-never", config_file=_config(settings)), return_state=True)

    assert state.is_failed()
    with pytest.raises(NoReport, match="run-never"):
        state.result()


def test_report_form_asks_only_for_the_run() -> None:
    from flows.report import ReportParams, report_flow

    assert_form(
        report_flow,
        ReportParams,
        {"config_file": "string | null", "quick": "boolean", "run_id": "string | null"},
    )
