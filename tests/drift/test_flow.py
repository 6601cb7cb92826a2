"""check-drift under Prefect's real ephemeral API: event, artifacts; then the pipeline's policy."""

from __future__ import annotations

from typing import Any

import pytest

from tests.drift.world import DriftWorld


@pytest.fixture
def environment(drift_world: DriftWorld, monkeypatch: pytest.MonkeyPatch) -> DriftWorld:
    """Flows build their settings from the environment, as a worker's would."""
    for key in ("RETINA_STORAGE_URL", "RETINA_DATABASE_URL", "RETINA_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RETINA_HOME", str(drift_world.settings.home))
    monkeypatch.setenv("RETINA_TRAIN__DEVICE", "cpu")
    monkeypatch.setenv("RETINA_TRAIN__NUM_WORKERS", "0")
    monkeypatch.setenv("RETINA_EVALUATION__BOOTSTRAP", "100")
    monkeypatch.setenv("RETINA_DRIFT__PERMUTATIONS", "499")
    monkeypatch.setenv("RETINA_DRIFT__MAX_SAMPLES", "200")
    return drift_world


def test_check_drift_flow_emits_the_verdict_and_publishes_artifacts(
    environment: DriftWorld, prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    import flows.drift as drift_module
    from flows.drift import DATASET_DRIFT, DriftParams, check_drift_flow

    emitted: list[dict[str, Any]] = []
    real_emit = drift_module.emit_event

    def spy(**kwargs: Any) -> Any:
        emitted.append(kwargs)
        return real_emit(**kwargs)

    monkeypatch.setattr(drift_module, "emit_event", spy)
    state = check_drift_flow(
        DriftParams(dataset_version=environment.shifted_version, new_images=60), return_state=True
    )
    report = state.result()
    assert report.drifted
    (event,) = emitted
    assert event["event"] == DATASET_DRIFT
    assert event["resource"] == {"prefect.resource.id": f"retina.dataset.{environment.shifted_version}"}
    payload = event["payload"]
    assert payload["new_images"] == 60 and payload["drifted"] is True
    assert payload["summary"] == report.summary() and "drift in" in payload["summary"]
    assert set(payload["modalities"]) == {"fundus", "oct"}
    with get_client(sync_client=True) as client:
        keys = ["retina-drift", "retina-drift-tests"]
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=keys),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert {a.key for a in artifacts} == set(keys)
    markdown = next(a for a in artifacts if a.key == "retina-drift").data
    assert "**Drift detected**" in markdown and report.check_id in markdown


class _Started(Exception):
    """Raised by the stand-in first training stage: the retrain got past its decision."""


def test_the_pipeline_retrains_on_drift_below_min_new_images_and_skips_otherwise(
    environment: DriftWorld, prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.pipeline as pipeline_module
    from flows.pipeline import PipelineParams, retrain_pipeline_flow

    quiet = retrain_pipeline_flow(PipelineParams(new_images=12, min_new_images=50))
    assert quiet.skipped is not None and "no rule fired" in quiet.skipped

    def started(*args: Any, **kwargs: Any) -> None:
        raise _Started

    monkeypatch.setattr(pipeline_module, "train_modality_flow", started)
    with pytest.raises(_Started):
        retrain_pipeline_flow(
            PipelineParams(new_images=12, min_new_images=50, drifted=True, drift_summary="fundus: drift")
        )


def test_retina_drift_prints_the_verdict_as_json(environment: DriftWorld, prefect_api: None) -> None:
    import json

    from typer.testing import CliRunner

    from retina_cli.app import app

    result = CliRunner().invoke(
        app, ["drift", "--json", "--dataset-version", str(environment.unshifted_version)]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["drifted"] is False and payload["dataset_version"] == environment.unshifted_version
    assert payload["modalities"]["fundus"]["n_new"] == 60


def test_a_failed_check_still_lets_the_new_images_rule_decide(
    environment: DriftWorld, prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import task

    import flows.drift as drift_module
    from flows.drift import DriftParams, check_drift_flow

    @task(name="check-drift")
    def broken(settings: Any, dataset_version: int | None) -> None:
        raise ValueError("champion weights unreadable")

    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr(drift_module, "check_drift_task", broken)
    monkeypatch.setattr(drift_module, "emit_event", lambda **kwargs: emitted.append(kwargs))
    state = check_drift_flow(DriftParams(dataset_version=9, new_images=70), return_state=True)
    assert state.is_failed()
    (event,) = emitted
    assert event["payload"]["new_images"] == 70 and event["payload"]["drifted"] is False
    assert "ValueError" in event["payload"]["summary"] and "unreadable" not in event["payload"]["summary"]
