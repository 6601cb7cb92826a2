"""What a stack needs, and the environment its children run in."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
PREFECT_FILE = PROJECT_DIR / "deployments" / "prefect.yaml"
GPU_TEMPLATE = PROJECT_DIR / "deployments" / "work-pools" / "retina-gpu.kubernetes.json"
LOCAL_POOL = "retina-local"
GPU_POOL = "retina-gpu"
DATABASE_VARIABLES = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")


class StackError(RuntimeError):
    """A stack step failed; the message says which and carries the tail of its log."""


@dataclass(frozen=True)
class StackConfig:
    """What a stack needs; the defaults are what ``make serve`` runs."""

    project_dir: Path = PROJECT_DIR
    # Server database (SQLite), logs and the CLI's profile; apart from the ephemeral
    # API's PREFECT_HOME so that `retina demo` and the server never share one SQLite file.
    prefect_home: Path = PROJECT_DIR / ".retina" / "prefect-server"
    prefect_file: Path = PREFECT_FILE
    host: str = "127.0.0.1"
    port: int | None = None  # None: a free port
    deployment_names: tuple[str, ...] | None = None  # None: every deployment of `deploy_pools`
    deploy_pools: tuple[str, ...] | None = (LOCAL_POOL,)  # None: every pool
    gpu_pool: bool = False
    # A process pool named retina-gpu with its own process worker, as the compose file's
    # worker-gpu runs it (a GPU host, or a stand-in on one machine); False: Kubernetes.
    gpu_worker: bool = False
    gpu_worker_env: dict[str, str] = field(default_factory=dict)
    deploy: bool = True
    worker: bool = True
    create_landing: bool = True
    startup_timeout_s: float = 180.0  # a fresh database migrates for ~15-20 s on 2 cores
    stop_timeout_s: float = 10.0
    extra_env: dict[str, str] = field(default_factory=dict)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stack_environment(config: StackConfig, port: int, base: dict[str, str]) -> dict[str, str]:
    """Children's environment: ours wins for where the API is; the user's wins for the rest.

    Host and port go through ``PREFECT_SERVER_API_HOST``/``PREFECT_SERVER_API_PORT`` rather
    than ``prefect server start --host/--port``: with the flags, the UI keeps calling the
    API on port 4200.
    """
    env = dict(base)
    env.update(config.extra_env)
    for key, value in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",  # the client's telemetry, as flows/runtime.py defaults it
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "RETINA_PROJECT_DIR": str(config.project_dir),
    }.items():
        env.setdefault(key, value)
    env.update(
        {
            "PREFECT_HOME": str(config.prefect_home),
            "PREFECT_SERVER_API_HOST": config.host,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_API_URL": f"http://{config.host}:{port}/api",
            "PREFECT_UI_URL": f"http://{config.host}:{port}",
        }
    )
    env.pop("PREFECT_UI_API_URL", None)  # derived from host/port by the server
    return env
