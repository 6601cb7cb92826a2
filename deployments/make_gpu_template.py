"""Regenerate ``deployments/work-pools/retina-gpu.kubernetes.json`` from prefect-kubernetes' default.

The Kubernetes worker's default base job template has no GPU, node-selector or
toleration variables. Rather than hand-editing a 300-line JSON file (and drifting from
the installed worker when prefect-kubernetes changes it), this script starts from the
installed worker's own default and adds only what a GPU training job needs:

- ``gpu_count`` -> ``resources.limits["nvidia.com/gpu"]`` (extended resources need only a
  limit; the request defaults to it);
- ``node_selector`` and ``tolerations`` -> the pod spec, defaulting to the labels/taint
  that NVIDIA's GPU operator puts on GPU nodes;
- ``secret_name`` / ``config_map_name`` -> ``envFrom`` on the container, so S3 and
  database credentials come from a Kubernetes Secret and never travel through Prefect
  (job variables are visible in the UI and the API);
- ``image`` defaults to the project image built from ``infra/Dockerfile``;
- the job's command starts the flow run under ``torchrun`` with one process per GPU
  (``--nproc-per-node={{ gpu_count }}``): rank 0 runs the flow run, the other ranks join
  the data-parallel training it starts when ``train.<modality>.distributed`` is on
  (``retina_cli.torchrun``); with one GPU it is a single process as before.

Run from the repository root: ``python -m deployments.make_gpu_template [--check]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).resolve().parent / "work-pools" / "retina-gpu.kubernetes.json"
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_IMAGE = "retina-fusion:latest"
TORCHRUN_ARGS = ["torchrun", "--standalone", "--nproc-per-node={{ gpu_count }}", "-m", "retina_cli.torchrun"]

GPU_VARIABLES: dict[str, dict[str, Any]] = {
    "gpu_count": {
        "title": "GPU count",
        "description": f"GPUs for the job container ({GPU_RESOURCE} limit), one torchrun process each.",
        "type": "integer",
        "minimum": 1,
        "default": 1,
    },
    "node_selector": {
        "title": "Node selector",
        "description": "Node labels the pod must match; the default is set by NVIDIA GPU feature discovery.",
        "type": "object",
        "additionalProperties": {"type": "string"},
        "default": {"nvidia.com/gpu.present": "true"},
    },
    "tolerations": {
        "title": "Tolerations",
        "description": "Pod tolerations; GPU node pools are usually tainted nvidia.com/gpu:NoSchedule.",
        "type": "array",
        "items": {"type": "object"},
        "default": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
    },
    "secret_name": {
        "title": "Credentials secret",
        "description": (
            "Kubernetes Secret loaded into the container's environment (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, RETINA_DATABASE_URL). See infra/k8s/secret.template.yaml."
        ),
        "type": "string",
        "default": "retina-credentials",
    },
    "config_map_name": {
        "title": "Settings config map",
        "description": "Kubernetes ConfigMap with the non-secret RETINA_* settings (storage URL, S3 endpoint).",
        "type": "string",
        "default": "retina-config",
    },
}


def default_base_job_template() -> dict[str, Any]:
    """The installed Kubernetes worker's default, exactly what the CLI prints."""
    from prefect_kubernetes.worker import KubernetesWorker

    return KubernetesWorker.get_default_base_job_template()


def add_gpu_support(template: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``template`` with the GPU variables declared and referenced in the job manifest."""
    result = copy.deepcopy(template)
    properties = result["variables"]["properties"]
    properties.update(copy.deepcopy(GPU_VARIABLES))
    properties["image"]["default"] = DEFAULT_IMAGE

    result["job_configuration"]["command"] = " ".join(TORCHRUN_ARGS)
    pod_spec = result["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    pod_spec["nodeSelector"] = "{{ node_selector }}"
    pod_spec["tolerations"] = "{{ tolerations }}"
    container = pod_spec["containers"][0]
    container["resources"]["limits"][GPU_RESOURCE] = "{{ gpu_count }}"
    container["args"] = list(TORCHRUN_ARGS)  # a list: each item is rendered on its own
    container["envFrom"] = [
        {"secretRef": {"name": "{{ secret_name }}"}},
        {"configMapRef": {"name": "{{ config_map_name }}", "optional": True}},
    ]
    return result


def render(template: dict[str, Any]) -> str:
    return json.dumps(template, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 when the file is out of date.")
    parser.add_argument("--output", type=Path, default=TEMPLATE_PATH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    text = render(add_gpu_support(default_base_job_template()))
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            logger.error("%s is out of date: run python -m deployments.make_gpu_template", args.output)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    logger.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
