"""The retina-gpu base job template, rendered by prefect-kubernetes' own worker code (no cluster)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from deployments.make_gpu_template import (
    GPU_RESOURCE,
    GPU_VARIABLES,
    TEMPLATE_PATH,
    add_gpu_support,
    default_base_job_template,
    main,
    render,
)

pytest.importorskip("prefect_kubernetes", reason="prefect-kubernetes (dev extra) renders the template")


class NoClient:
    """Stands in for the Prefect client: a template without block or variable references needs none."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the template should not need the Prefect API ({name})")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads(TEMPLATE_PATH.read_text())


def job_manifest(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """What the worker would submit for a flow run with these job variables."""
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    configuration = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(template, values, client=NoClient())
    )
    configuration.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="gpu-run", flow_id=uuid.uuid4()))
    return configuration.job_manifest


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def test_committed_file_is_what_the_script_generates(template: dict[str, Any]) -> None:
    expected = render(add_gpu_support(default_base_job_template()))
    assert TEMPLATE_PATH.read_text() == expected, "run: python -m deployments.make_gpu_template"
    assert main(["--check"]) == 0


def test_check_flags_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "retina-gpu.kubernetes.json"
    stale.write_text("{}\n")
    assert main(["--check", "--output", str(stale)]) == 1
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0


def test_every_variable_is_declared_and_referenced(template: dict[str, Any]) -> None:
    from prefect.utilities.templating import find_placeholders

    declared = set(template["variables"]["properties"])
    referenced = {p.name for p in find_placeholders(template["job_configuration"])}
    assert set(GPU_VARIABLES) <= declared
    assert set(GPU_VARIABLES) <= referenced
    assert referenced <= declared


def test_gpu_count_node_selector_and_tolerations_reach_the_job(template: dict[str, Any]) -> None:
    toleration = {"key": "dedicated", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}
    manifest = job_manifest(
        template,
        {
            "gpu_count": 2,
            "node_selector": {"gpu": "a100"},
            "tolerations": [toleration],
            "namespace": "retina",
        },
    )
    pod = manifest["spec"]["template"]["spec"]
    assert str(container(manifest)["resources"]["limits"][GPU_RESOURCE]) == "2"
    assert container(manifest)["args"] == [
        "torchrun",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "retina_cli.torchrun",
    ]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [toleration]
    assert manifest["metadata"]["namespace"] == "retina"


def test_defaults_ask_for_one_gpu_on_a_gpu_node_with_credentials_from_a_secret(
    template: dict[str, Any],
) -> None:
    manifest = job_manifest(template, {})
    pod = manifest["spec"]["template"]["spec"]
    assert str(container(manifest)["resources"]["limits"][GPU_RESOURCE]) == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"secretRef": {"name": "retina-credentials"}} in container(manifest)["envFrom"]
    assert container(manifest)["image"] == "retina-fusion:latest"
    env_names = {entry["name"] for entry in container(manifest)["env"]}
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & env_names


def test_prefect_yaml_gpu_job_variables_render(
    template: dict[str, Any], deployments_by_name: dict[str, dict[str, Any]]
) -> None:
    variables = deployments_by_name["train-modality"]["work_pool"]["job_variables"]
    manifest = job_manifest(template, variables)
    assert manifest["metadata"]["namespace"] == variables["namespace"]
    assert str(container(manifest)["resources"]["limits"][GPU_RESOURCE]) == str(variables["gpu_count"])
    env = {entry["name"]: entry.get("value") for entry in container(manifest)["env"]}
    assert env["RETINA_TRAIN__DEVICE"] == "cuda"
