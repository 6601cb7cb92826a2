"""The local deployment stack behind ``make serve``: a Prefect server, work pools, deployments, a worker.

Everything runs as child processes of this one so that a single Ctrl-C (or SIGTERM)
stops it all, in order: the worker first (so it starts no new run against a server
that is going away), then the server. Two measured traps shape the code (see
PREFECT_NOTES):

- host and port go through ``PREFECT_SERVER_API_HOST``/``PREFECT_SERVER_API_PORT``; with
  ``--host/--port`` the UI keeps calling port 4200;
- a worker inherits an ignored SIGINT from a non-interactive parent and then ignores
  SIGTERM too, so children are started with SIGINT reset to its default.

Children get their own session, so a terminal's Ctrl-C reaches only this process and
the ordered shutdown above is ours to run. The database is SQLite under PREFECT_HOME
unless ``PREFECT_API_DATABASE_CONNECTION_URL`` (PostgreSQL) is set in the environment.

Usage (from the repository root): ``python -m deployments.stack [--port N] [--all-deployments]
[--deployment NAME ...] [--gpu-pool] [--no-deploy] [--no-worker]``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[1]
PREFECT_FILE = PROJECT_DIR / "deployments" / "prefect.yaml"
GPU_TEMPLATE = PROJECT_DIR / "deployments" / "work-pools" / "retina-gpu.kubernetes.json"
LOCAL_POOL = "retina-local"
GPU_POOL = "retina-gpu"
RETRY_STATUS = frozenset({429, 502, 503})
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Waits between tries of a request the server answered with a transient status (about 15 s in all)."""
DATABASE_VARIABLES = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")


class StackError(RuntimeError):
    """A stack step failed; the message says which and carries the tail of its log."""


# --- prefect.yaml: which deployments to deploy (pure) ---------------------------------------


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str
    work_pool: str

    @property
    def entrypoint_file(self) -> str:
        return self.entrypoint.rsplit(":", 1)[0]


def read_deployments(prefect_file: Path = PREFECT_FILE) -> list[DeploymentSpec]:
    spec = yaml.safe_load(prefect_file.read_text())
    return [
        DeploymentSpec(d["name"], d["entrypoint"], (d.get("work_pool") or {}).get("name", ""))
        for d in spec.get("deployments") or []
    ]


def select_deployments(
    deployments: Sequence[DeploymentSpec],
    *,
    names: Sequence[str] | None = None,
    pools: Iterable[str] | None = (LOCAL_POOL,),
) -> list[DeploymentSpec]:
    """By explicit names (an unknown name is an error), else by work pool (None: every pool)."""
    if names is not None:
        by_name = {d.name: d for d in deployments}
        unknown = sorted(set(names) - by_name.keys())
        if unknown:
            raise StackError(f"no deployment named {', '.join(unknown)} in prefect.yaml")
        return [by_name[name] for name in names]
    wanted = None if pools is None else set(pools)
    return [d for d in deployments if wanted is None or d.work_pool in wanted]


def split_deployable(
    deployments: Sequence[DeploymentSpec], project_dir: Path
) -> tuple[list[DeploymentSpec], list[DeploymentSpec]]:
    """``(deployable, missing)``: a flow whose file does not exist yet is skipped, not fatal."""
    present = [d for d in deployments if (project_dir / d.entrypoint_file).is_file()]
    return present, [d for d in deployments if d not in present]


def landing_folders(prefect_file: Path, project_dir: Path) -> list[Path]:
    """Local ``location`` parameters of the deployments: a scheduled ingest fails on a missing folder."""
    spec = yaml.safe_load(prefect_file.read_text())
    folders = []
    for deployment in spec.get("deployments") or []:
        location = ((deployment.get("parameters") or {}).get("params") or {}).get("location")
        if isinstance(location, str) and "://" not in location and "{{" not in location:
            folders.append(project_dir / location)
    return folders


# --- configuration ----------------------------------------------------------------------------


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
    deploy: bool = True
    worker: bool = True
    create_landing: bool = True
    startup_timeout_s: float = 180.0  # a fresh database migrates for ~15-20 s on 2 cores
    stop_timeout_s: float = 10.0
    extra_env: dict[str, str] = field(default_factory=dict)


def process_job_template() -> dict[str, Any]:
    """The process worker's own default template, so the pool's job variables show in the UI."""
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stack_environment(config: StackConfig, port: int, base: dict[str, str]) -> dict[str, str]:
    """Children's environment: ours wins for where the API is; the user's wins for the rest."""
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


# --- processes (Linux/macOS) ------------------------------------------------------------------


def _child_setup() -> None:
    """Runs in the child before exec: default SIGINT/SIGTERM, and die with this process on Linux."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 (state) on; the command name before it may hold spaces."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            children.setdefault(int(_stat_fields(int(stat.parent.name))[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _start_time(pid: int) -> str | None:
    """Clock ticks since boot when ``pid`` started: tells our process from a later one with its pid."""
    with contextlib.suppress(OSError, IndexError):
        return _stat_fields(pid)[19]
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):  # a zombie has exited; its parent has yet to reap it
        return _stat_fields(pid)[0] != "Z"
    return True


def stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the child's session, then SIGKILL whatever of its tree is left after ``timeout_s``.

    The tree is snapshotted with start times before the first signal, so the SIGKILL
    round never reaches an unrelated process that inherited a freed pid.
    """
    if process.poll() is not None:
        return
    tree = {pid: _start_time(pid) for pid in descendants(process.pid)}
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("pid %d did not stop within %.0f s: killing it", process.pid, timeout_s)
        process.kill()
        process.wait()
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, started in tree.items():
        if pid_alive(pid) and _start_time(pid) == started:
            logger.warning("killing pid %d, left behind by pid %d", pid, process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def log_tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --- the stack --------------------------------------------------------------------------------


class LocalStack:
    """A Prefect server, the work pools, the deployments and a process worker, as one unit.

    ``start()`` is all-or-nothing: a failing step stops what was started before it
    raises. Use it as a context manager so that it stops on any exit.
    """

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.port: int | None = None
        self.api_url = ""
        self.ui_url = ""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.deployed: list[str] = []
        self.log_dir = self.config.prefect_home / "logs"
        self._env: dict[str, str] = {}

    # -- lifecycle

    def start(self) -> Self:
        config = self.config
        self.port = config.port or free_port(config.host)
        self.api_url = f"http://{config.host}:{self.port}/api"
        self.ui_url = f"http://{config.host}:{self.port}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._env = stack_environment(config, self.port, dict(os.environ))
        try:
            self._start_server()
            self.ensure_work_pool(LOCAL_POOL, "process", process_job_template())
            if config.gpu_pool:
                self._ensure_gpu_pool()
            if config.create_landing:
                for folder in landing_folders(config.prefect_file, config.project_dir):
                    folder.mkdir(parents=True, exist_ok=True)
            if config.deploy:
                self.deploy(self._deployments_to_deploy())
            if config.worker:
                self._start_worker()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Worker first, then server; bounded by ``stop_timeout_s`` per process."""
        for name in ("worker", "server"):
            process = self.processes.get(name)
            if process is not None:
                stop_process(process, self.config.stop_timeout_s)
                logger.info("stopped %s (pid %d)", name, process.pid)

    def wait(self, poll_s: float = 0.5) -> int:
        """Block until a child exits on its own; 1 then (stopping on a signal raises instead)."""
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    logger.error(
                        "%s exited with %s:\n%s", name, process.returncode, log_tail(self._log(name))
                    )
                    return 1
            time.sleep(poll_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- API

    def request(self, method: str, path: str, body: Any = None, timeout_s: float = 5.0) -> Any:
        """JSON over the REST API; None for a 404 (the one 'absent' answer callers branch on).

        429/502/503 are retried with backoff, as Prefect's own client does: a server on
        SQLite answers 503 while a busy flow run holds the database lock.
        """
        data = None if body is None else json.dumps(body).encode()
        for delay in (*RETRY_DELAYS_S, None):
            req = urllib.request.Request(
                f"{self.api_url}{path}",
                data=data,
                method=method,
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=timeout_s) as response:
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code not in RETRY_STATUS or delay is None:
                    raise
                logger.info("%s %s answered %d; retrying in %.1f s", method, path, exc.code, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/health", timeout_s=2.0) is True
        except (OSError, ValueError):
            return False

    def work_pool(self, name: str) -> dict[str, Any] | None:
        return self.request("GET", f"/work_pools/{name}")

    def workers(self, pool: str = LOCAL_POOL) -> list[dict[str, Any]]:
        return self.request("POST", f"/work_pools/{pool}/workers/filter", {}) or []

    def wait_for(self, condition: Callable[[], bool], what: str, timeout_s: float) -> None:
        """Poll ``condition``; fail early when the server dies, clearly when time runs out."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            server = self.processes.get("server")
            if server is not None and server.poll() is not None:
                raise StackError(
                    f"prefect server exited ({server.returncode}) while waiting for {what}:\n"
                    f"{log_tail(self._log('server'))}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"timed out after {timeout_s:.0f} s waiting for {what}; server log "
                    f"{self._log('server')}:\n{log_tail(self._log('server'))}"
                )
            time.sleep(0.25)

    # -- steps

    def ensure_work_pool(self, name: str, pool_type: str, base_job_template: dict[str, Any]) -> None:
        """Create the pool through the REST API when missing (the CLI costs ~5-10 s of imports here)."""
        if self.work_pool(name) is not None:
            logger.info("work pool %s exists", name)
            return
        self.request(
            "POST", "/work_pools/", {"name": name, "type": pool_type, "base_job_template": base_job_template}
        )
        logger.info("created work pool %s (%s)", name, pool_type)

    def deploy(self, names: Sequence[str]) -> None:
        """``prefect deploy`` from the project root, where the entrypoints resolve.

        One command for all (each costs seconds of imports); when it fails, one command
        per deployment, so that a flow that does not import yet costs only its own
        deployment. Raises when none could be deployed.
        """
        if not names:
            logger.info("no deployments selected")
            return
        try:
            self._deploy_command(names)
            self.deployed = list(names)
        except StackError as batch_error:
            if len(names) == 1:
                raise
            logger.warning("deploying all at once failed; retrying one by one (log %s)", self._log("deploy"))
            for name in names:
                try:
                    self._deploy_command([name])
                    self.deployed.append(name)
                except StackError:
                    logger.warning("could not deploy %s: see %s", name, self._log("deploy"))
            if not self.deployed:
                raise batch_error
        logger.info("deployed %s", ", ".join(self.deployed))

    def _deploy_command(self, names: Sequence[str]) -> None:
        args = ["--no-prompt", "deploy", "--prefect-file", str(self.config.prefect_file)]
        for name in names:
            args += ["--name", name]
        self._prefect(*args, log_name="deploy", timeout_s=300)

    def _deployments_to_deploy(self) -> list[str]:
        """The selection, less flows not written yet and pools that do not exist.

        A non-interactive ``prefect deploy`` to a missing pool fails the whole command,
        so those are skipped here with a warning rather than sinking the other deployments.
        """
        config = self.config
        selected = select_deployments(
            read_deployments(config.prefect_file), names=config.deployment_names, pools=config.deploy_pools
        )
        deployable, missing = split_deployable(selected, config.project_dir)
        for deployment in missing:
            logger.warning(
                "skipping deployment %s: %s does not exist yet", deployment.name, deployment.entrypoint_file
            )
        absent_pools = {d.work_pool for d in deployable if self.work_pool(d.work_pool) is None}
        for deployment in deployable:
            if deployment.work_pool in absent_pools:
                logger.warning(
                    "skipping deployment %s: work pool %s does not exist (--gpu-pool creates %s)",
                    deployment.name,
                    deployment.work_pool,
                    GPU_POOL,
                )
        return [d.name for d in deployable if d.work_pool not in absent_pools]

    def _ensure_gpu_pool(self) -> None:
        if importlib.util.find_spec("prefect_kubernetes") is None:
            logger.warning("prefect-kubernetes is not installed: no %s pool", GPU_POOL)
            return
        self.ensure_work_pool(GPU_POOL, "kubernetes", json.loads(GPU_TEMPLATE.read_text()))

    def _start_server(self) -> None:
        database = next((self._env[v] for v in DATABASE_VARIABLES if self._env.get(v)), None)
        logger.info(
            "starting prefect server on %s (%s)",
            self.ui_url,
            "PostgreSQL" if database and database.startswith("postgresql") else "SQLite",
        )
        started = time.monotonic()
        self.processes["server"] = self._spawn("server", "server", "start")
        self.wait_for(self.healthy, f"{self.api_url}/health", self.config.startup_timeout_s)
        logger.info("server healthy after %.1f s", time.monotonic() - started)

    def _start_worker(self) -> None:
        self.processes["worker"] = self._spawn(
            "worker", "worker", "start", "--pool", LOCAL_POOL, "--type", "process"
        )
        logger.info("worker started for %s (log %s)", LOCAL_POOL, self._log("worker"))

    # -- plumbing

    def _log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "prefect", *args]

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with self._log(name).open("ab") as log:
            return subprocess.Popen(
                self._command(*args),
                cwd=self.config.project_dir,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup,  # no threads here; the only way to reset an ignored SIGINT
            )

    def _prefect(self, *args: str, log_name: str, timeout_s: float = 120) -> None:
        log = self._log(log_name)
        with log.open("ab") as out:
            result = subprocess.run(
                self._command(*args),
                cwd=self.config.project_dir,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
            )
        if result.returncode != 0:
            raise StackError(f"prefect {' '.join(args)} failed ({result.returncode}):\n{log_tail(log)}")


# --- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> StackConfig:
    parser = argparse.ArgumentParser(prog="python -m deployments.stack", description=__doc__.splitlines()[0])
    port = os.environ.get("PREFECT_SERVER_API_PORT")
    parser.add_argument(
        "--port",
        type=int,
        default=int(port) if port else None,
        help="API/UI port (default: $PREFECT_SERVER_API_PORT, else a free one).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Bind address (default: loopback only).")
    parser.add_argument(
        "--prefect-home",
        type=Path,
        default=None,
        help="Server database and logs (default: $PREFECT_HOME, else .retina/prefect-server).",
    )
    parser.add_argument(
        "--all-deployments", action="store_true", help="Deploy every deployment, GPU pool included."
    )
    parser.add_argument(
        "--deployment", action="append", dest="names", metavar="NAME", help="Deploy only NAME (repeatable)."
    )
    parser.add_argument(
        "--gpu-pool",
        action="store_true",
        help=f"Create the {GPU_POOL} Kubernetes pool (needs prefect-kubernetes).",
    )
    parser.add_argument(
        "--no-deploy", action="store_true", help="Keep the deployments already on the server."
    )
    parser.add_argument("--no-worker", action="store_true", help="Do not start the process worker.")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="Seconds to wait for the API.")
    args = parser.parse_args(argv)
    home = args.prefect_home or Path(
        os.environ.get("PREFECT_HOME") or PROJECT_DIR / ".retina" / "prefect-server"
    )
    return StackConfig(
        prefect_home=home.expanduser().absolute(),
        host=args.host,
        port=args.port,
        deployment_names=tuple(args.names) if args.names else None,
        deploy_pools=None if args.all_deployments else (LOCAL_POOL,),
        gpu_pool=args.gpu_pool or args.all_deployments,
        deploy=not args.no_deploy,
        worker=not args.no_worker,
        startup_timeout_s=args.startup_timeout,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    os.environ.setdefault("DO_NOT_TRACK", "1")  # before anything imports prefect: no telemetry banner
    stack = LocalStack(parse_args(argv))
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also where a non-interactive parent left it ignored
    code = 0
    try:
        stack.start()
        print(f"Prefect UI:  {stack.ui_url}", flush=True)
        print(f"Prefect API: {stack.api_url}  (export PREFECT_API_URL={stack.api_url})", flush=True)
        print(f"Logs:        {stack.log_dir}", flush=True)
        print("Ctrl-C stops the worker, then the server.", flush=True)
        code = stack.wait()
    except KeyboardInterrupt:
        logger.info("stopping")
    except StackError as exc:
        logger.error("%s", exc)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
