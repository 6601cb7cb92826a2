"""deployments/prefect.yaml: the contract between the flows, the pools and the event trigger.

The flow functions are found by parsing the flow files (ast), not by importing them, so a
broken import elsewhere never hides which entrypoint is wrong. Every flow exists: an
entrypoint whose file is missing is a failure that names the file.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

# deployment -> (entrypoint, flow name): the convention the flows are written to.
EXPECTED = {
    "ingest-aptos": ("flows/ingest.py:ingest_flow", "ingest"),
    "ingest-kermany": ("flows/ingest.py:ingest_flow", "ingest"),
    "retrain-pipeline": ("flows/pipeline.py:retrain_pipeline_flow", "retrain-pipeline"),
    "train-modality": ("flows/train.py:train_modality_flow", "train-modality"),
    "embed": ("flows/embed.py:embed_flow", "embed"),
    "train-modality-local": ("flows/train.py:train_modality_flow", "train-modality"),
    "embed-local": ("flows/embed.py:embed_flow", "embed"),
    "train-fusion": ("flows/fusion.py:train_fusion_flow", "train-fusion"),
    "report": ("flows/report.py:report_flow", "report"),
    "check-drift": ("flows/drift.py:check_drift_flow", "check-drift"),
}
GPU_DEPLOYMENTS = {"train-modality", "embed"}
DATASET_EVENT = "retina.dataset.updated"
DRIFT_EVENT = "retina.dataset.drift"


def flow_decorator_name(source: str, function: str) -> str | None:
    """The ``name=`` of the ``@flow`` decorating ``function``; '' when unnamed, None when absent."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
            for decorator in node.decorator_list:
                call = decorator if isinstance(decorator, ast.Call) else None
                target = call.func if call else decorator
                if getattr(target, "id", getattr(target, "attr", None)) != "flow":
                    continue
                for keyword in call.keywords if call else []:
                    if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                        return str(keyword.value.value)
                return ""
    return None


def test_every_expected_deployment_is_declared_once(prefect_spec: dict[str, Any]) -> None:
    names = [d["name"] for d in prefect_spec["deployments"]]
    assert sorted(names) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_entrypoint_follows_the_flow_convention(
    name: str, deployments_by_name: dict[str, dict[str, Any]], repo_root: Path
) -> None:
    entrypoint, flow_name = EXPECTED[name]
    assert deployments_by_name[name]["entrypoint"] == entrypoint
    path, function = entrypoint.split(":")
    assert (repo_root / path).is_file(), f"{name}: entrypoint file {path} does not exist"
    found = flow_decorator_name((repo_root / path).read_text(), function)
    assert found is not None, f"{path} defines no @flow function {function}"
    assert found == flow_name, f"{function} is @flow(name={found!r}), expected {flow_name!r}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_work_pool_is_gpu_for_gpu_stages_and_local_otherwise(
    name: str, deployments_by_name: dict[str, dict[str, Any]]
) -> None:
    pool = deployments_by_name[name]["work_pool"]
    if name in GPU_DEPLOYMENTS:
        assert pool["name"] == "retina-gpu"
        assert pool["job_variables"]["gpu_count"] >= 1
        assert pool["job_variables"]["namespace"] == "retina"
    else:
        assert pool["name"] == "retina-local"


def test_shared_pieces_come_from_definitions_anchors(prefect_spec: dict[str, Any]) -> None:
    """yaml aliases load as the very same object: `is` proves the anchor was used, not a copy."""
    definitions = prefect_spec["definitions"]
    pools = definitions["work_pools"]
    pull = definitions["pull_steps"]["project_dir"]
    for deployment in prefect_spec["deployments"]:
        assert deployment["work_pool"] is pools["gpu" if deployment["name"] in GPU_DEPLOYMENTS else "local"]
        assert deployment["pull"] is pull
    assert prefect_spec["pull"] is pull
    by_name = {d["name"]: d for d in prefect_spec["deployments"]}
    assert by_name["ingest-aptos"]["schedules"][0] is definitions["schedules"]["nightly"]
    assert by_name["ingest-kermany"]["schedules"][0] is definitions["schedules"]["every_six_hours"]
    assert by_name["retrain-pipeline"]["parameters"]["params"] is definitions["parameters"]["pipeline"]


def test_ingestion_is_scheduled_with_a_safe_landing_default(
    deployments_by_name: dict[str, dict[str, Any]],
) -> None:
    """An unset `{{ $VAR }}` would be stored verbatim at deploy time, so no env placeholder here."""
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    for name, source in (("ingest-aptos", "aptos"), ("ingest-kermany", "kermany")):
        deployment = deployments_by_name[name]
        params = deployment["parameters"]["params"]
        assert params == {"source": source, "location": f".retina/landing/{source}"}
        assert deployment["schedules"], f"{name} has no schedule"
        for entry in deployment["schedules"]:
            parsed = _schedule_config_to_deployment_schedule(entry)  # what `prefect deploy` does
            assert parsed["active"] is True
            assert isinstance(parsed["schedule"], CronSchedule | IntervalSchedule)


def test_pull_step_reads_the_project_dir_from_the_worker_at_run_time(prefect_spec: dict[str, Any]) -> None:
    (step,) = prefect_spec["pull"]
    assert step == {
        "prefect.deployments.steps.set_working_directory": {"directory": "{{ $RETINA_PROJECT_DIR }}"}
    }


def _trigger(deployment: dict[str, Any]) -> Any:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    (raw,) = deployment["triggers"]
    return DeploymentEventTrigger.model_validate(raw)  # Prefect's own schema for the entry


def test_check_drift_is_triggered_by_dataset_updates(deployments_by_name: dict[str, dict[str, Any]]) -> None:
    trigger = _trigger(deployments_by_name["check-drift"])
    assert trigger.expect == {DATASET_EVENT}
    assert trigger.threshold == 1
    (pattern,) = trigger.match.root.values()
    assert fnmatch.fnmatchcase("retina.dataset.7", pattern)
    assert trigger.parameters == {
        "params": {
            "dataset_version": "{{ event.payload.dataset_version }}",
            "new_images": "{{ event.payload.new_images }}",
        }
    }


def test_retrain_pipeline_is_triggered_by_the_drift_verdict(
    deployments_by_name: dict[str, dict[str, Any]],
) -> None:
    """One trigger per dataset update: the drift check's event, never the update itself as well."""
    deployment = deployments_by_name["retrain-pipeline"]
    trigger = _trigger(deployment)
    assert trigger.expect == {DRIFT_EVENT}
    assert trigger.threshold == 1
    (pattern,) = trigger.match.root.values()
    assert fnmatch.fnmatchcase("retina.dataset.20240101-abc123", pattern)
    assert trigger.parameters is not None
    params = trigger.parameters["params"]
    assert params["new_images"] == "{{ event.payload.new_images }}"
    assert params["drifted"] == "{{ event.payload.drifted }}"
    assert params["champion_degraded"] == "{{ event.payload.champion_degraded }}"
    assert params["min_new_images"] == deployment["parameters"]["params"]["min_new_images"]
    assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}


def _render(raw: dict[str, Any], event_name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Rendered with the server's own code path (v1 template upgrade, then Jinja hydration)."""
    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    event = ReceivedEvent(
        occurred=datetime.now(UTC),
        event=event_name,
        resource={"prefect.resource.id": "retina.dataset.7"},
        payload=payload,
        id=uuid.uuid4(),
    )
    parameters = copy.deepcopy(raw["parameters"])
    RunDeployment._upgrade_v1_templates(parameters)
    return hydrate(
        parameters, HydrationContext(render_jinja=True, raise_on_error=True, jinja_context={"event": event})
    )


def test_trigger_parameters_render_the_payload_with_its_json_types(
    deployments_by_name: dict[str, dict[str, Any]],
) -> None:
    (check,) = deployments_by_name["check-drift"]["triggers"]
    updated = {"dataset_version": 7, "source": "kermany", "new_images": 7, "new_pairs": 0}
    assert _render(check, DATASET_EVENT, updated) == {"params": {"dataset_version": 7, "new_images": 7}}

    (retrain,) = deployments_by_name["retrain-pipeline"]["triggers"]
    drift = {
        "new_images": 7,
        "drifted": True,
        "champion_degraded": False,
        "summary": "fundus: drift in brightness",
    }
    rendered = _render(retrain, DRIFT_EVENT, drift)
    assert rendered == {
        "params": {
            "quick": False,
            "min_new_images": 50,
            "new_images": 7,
            "drifted": True,
            "champion_degraded": False,
            "drift_summary": "fundus: drift in brightness",
        }
    }
    assert type(rendered["params"]["new_images"]) is int
    assert rendered["params"]["drifted"] is True
