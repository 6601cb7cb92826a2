"""infra/: the compose file, the image and the Kubernetes manifests agree with each other and the design."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REQUIRED_SERVICES = {"postgres", "prefect-server", "minio", "minio-init", "worker-cpu", "worker-gpu", "serve"}
WORKERS = ("worker-cpu", "worker-gpu")
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def manifests(repo_root: Path) -> list[dict[str, Any]]:
    documents = []
    for path in sorted((repo_root / "infra" / "k8s").glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


# --- compose ----------------------------------------------------------------------------------


def test_compose_has_the_required_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= REQUIRED_SERVICES


def test_prefect_server_runs_on_postgres_and_listens_on_all_interfaces(compose: dict[str, Any]) -> None:
    server = compose["services"]["prefect-server"]
    assert server["image"] == "prefecthq/prefect:3-python3.11"
    env = server["environment"]
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in env["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert env["PREFECT_SERVER_API_HOST"] == "0.0.0.0"
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_postgres_is_15_with_a_healthcheck(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:15")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_minio_init_creates_the_bucket_once_minio_is_healthy(compose: dict[str, Any]) -> None:
    init = compose["services"]["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing" in " ".join(init["command"])
    assert init["restart"] == "no"


@pytest.mark.parametrize("name", WORKERS)
def test_workers_are_configured_by_retina_and_prefect_variables(compose: dict[str, Any], name: str) -> None:
    worker = compose["services"][name]
    env = worker["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["RETINA_STORAGE_URL"].startswith("s3://")
    assert env["RETINA_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["RETINA_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["RETINA_PROJECT_DIR"] == "/app"  # the deployments' pull step changes into it
    assert {"RETINA_HOME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)
    assert worker["build"]["dockerfile"] == "infra/Dockerfile"
    assert worker["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    pool = "retina-local" if name == "worker-cpu" else "retina-gpu"
    assert worker["command"][:5] == ["prefect", "worker", "start", "--pool", pool]


def test_gpu_worker_reserves_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices
    assert "deploy" not in compose["services"]["worker-cpu"]


def test_credentials_are_variables_with_placeholder_defaults(
    repo_root: Path, compose: dict[str, Any]
) -> None:
    """Every secret-looking value is interpolated, and every variable is documented in .env.example."""
    secret_words = ("PASSWORD", "SECRET", "DATABASE_URL", "CONNECTION_URL")
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in secret_words):
                assert "${" in str(value), f"{name}.{key} must come from a variable"
    text = (repo_root / "infra" / "compose.yaml").read_text()
    defaults = re.findall(r"\$\{[A-Z_]+:-([^}]*)\}", text)
    for default in defaults:
        assert not re.search(r"(?i)password|secret", default) or "change-me" in default
    example = (repo_root / "infra" / ".env.example").read_text()
    documented = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line}
    assert set(INTERPOLATION.findall(text)) <= documented


def test_serve_reads_the_same_catalog_and_store_as_the_workers(compose: dict[str, Any]) -> None:
    serve = compose["services"]["serve"]
    assert serve["command"] == ["retina", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert serve["build"]["dockerfile"] == "infra/Dockerfile"
    worker_env = compose["services"]["worker-cpu"]["environment"]
    for key in ("RETINA_DATABASE_URL", "RETINA_STORAGE_URL", "RETINA_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"):
        assert serve["environment"][key] == worker_env[key]
    assert serve["environment"]["RETINA_SERVE__TOKEN"].startswith("${RETINA_SERVE_TOKEN")
    assert serve["ports"] == ["127.0.0.1:8000:8000"]  # loopback only, like the other services
    assert "/healthz" in " ".join(serve["healthcheck"]["test"])
    assert serve["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_docker_compose_accepts_the_file(repo_root: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker client on this machine")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        reason = (probe.stderr or probe.stdout).strip().splitlines()[:1]
        pytest.skip(f"docker compose plugin not installed ({' '.join(reason)})")
    result = subprocess.run(
        ["docker", "compose", "-f", str(repo_root / "infra" / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_image_installs_the_project_and_knows_where_it_is(repo_root: Path) -> None:
    dockerfile = (repo_root / "infra" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert "pip install" in dockerfile
    assert "RETINA_PROJECT_DIR=/app" in dockerfile
    for package in ("retina_core", "retina_cli", "tasks", "flows", "deployments"):
        assert f"COPY {package} " in dockerfile


# --- kubernetes -------------------------------------------------------------------------------


def test_manifests_parse_and_have_the_expected_kinds(repo_root: Path) -> None:
    kinds = {doc["kind"] for doc in manifests(repo_root)}
    assert {
        "Namespace",
        "Secret",
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
    } <= kinds


def test_everything_lives_in_the_namespace_the_gpu_jobs_use(
    repo_root: Path, deployments_by_name: dict[str, dict[str, Any]]
) -> None:
    documents = manifests(repo_root)
    (namespace,) = by_kind(documents, "Namespace")
    name = namespace["metadata"]["name"]
    assert deployments_by_name["train-modality"]["work_pool"]["job_variables"]["namespace"] == name
    for doc in documents:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == name, doc["metadata"]["name"]


def test_worker_runs_a_kubernetes_worker_for_retina_gpu_with_its_service_account(repo_root: Path) -> None:
    documents = manifests(repo_root)
    (deployment,) = [d for d in by_kind(documents, "Deployment") if d["metadata"]["name"] == "prefect-worker"]
    pod = deployment["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["image"].startswith("prefecthq/prefect:3")
    assert worker["args"] == ["prefect", "worker", "start", "--pool", "retina-gpu", "--type", "kubernetes"]
    (account,) = by_kind(documents, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    (binding,) = by_kind(documents, "RoleBinding")
    (role,) = by_kind(documents, "Role")
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    job_rules = [r for r in role["rules"] if "jobs" in r["resources"] and "batch" in r["apiGroups"]]
    assert job_rules and {"create", "watch", "delete"} <= set(job_rules[0]["verbs"])


def test_serve_deployment_and_service_read_the_catalog_and_store_the_jobs_use(repo_root: Path) -> None:
    documents = manifests(repo_root)
    (deployment,) = [d for d in by_kind(documents, "Deployment") if d["metadata"]["name"] == "retina-serve"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["retina", "serve", "--host", "0.0.0.0", "--port", "8000"]
    template = json.loads(
        (repo_root / "deployments" / "work-pools" / "retina-gpu.kubernetes.json").read_text()
    )
    properties = template["variables"]["properties"]
    sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {properties["secret_name"]["default"], properties["config_map_name"]["default"]}
    token = next(e for e in container["env"] if e["name"] == "RETINA_SERVE__TOKEN")
    assert "secretKeyRef" in token["valueFrom"]  # never a literal in the manifest
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (service,) = [s for s in by_kind(documents, "Service") if s["metadata"]["name"] == "retina-serve"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    if deployment["spec"]["replicas"] > 1:  # overlays are in one pod's memory: a client must stay on it
        assert service["spec"]["sessionAffinity"] == "ClientIP"
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_secret_template_holds_placeholders_named_as_the_job_template_expects(repo_root: Path) -> None:
    documents = manifests(repo_root)
    (secret,) = by_kind(documents, "Secret")
    values = secret["stringData"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(values)
    assert all("<" in value and ">" in value for value in values.values()), "placeholders only"
    template = json.loads(
        (repo_root / "deployments" / "work-pools" / "retina-gpu.kubernetes.json").read_text()
    )
    properties = template["variables"]["properties"]
    assert properties["secret_name"]["default"] == secret["metadata"]["name"]
    config_maps = {doc["metadata"]["name"] for doc in by_kind(documents, "ConfigMap")}
    assert properties["config_map_name"]["default"] in config_maps
