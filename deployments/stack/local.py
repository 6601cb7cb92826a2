"""The stack itself: server, work pools, deployments and a worker, started in order and stopped in reverse.

Prefect's CLI runs the server, the worker and ``prefect deploy``; Prefect's client
(bound to this stack's API, whatever ``PREFECT_API_URL`` says in this process) checks
health and creates the work pools, retrying the 429/502/503 answers a server on SQLite
gives while a flow run holds the database lock.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from deployments.stack.config import (
    DATABASE_VARIABLES,
    GPU_POOL,
    GPU_TEMPLATE,
    LOCAL_POOL,
    StackConfig,
    StackError,
    free_port,
    stack_environment,
)
from deployments.stack.processes import log_tail, run_logged, spawn, stop_process
from deployments.stack.selection import (
    landing_folders,
    read_deployments,
    select_deployments,
    split_deployable,
)

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import Worker, WorkPool

logger = logging.getLogger(__name__)


def process_job_template() -> dict[str, Any]:
    """The process worker's own default template, so the pool's job variables show in the UI."""
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


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
            if config.gpu_worker:
                self.ensure_work_pool(GPU_POOL, "process", process_job_template())
            elif config.gpu_pool:
                self._ensure_gpu_pool()
            if config.create_landing:
                for folder in landing_folders(config.prefect_file, config.project_dir):
                    folder.mkdir(parents=True, exist_ok=True)
            if config.deploy:
                self.deploy(self._deployments_to_deploy())
            if config.worker:
                self._start_worker()
            if config.gpu_worker:
                self._start_worker(GPU_POOL, "worker-gpu", config.gpu_worker_env)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Workers first, then the server; bounded by ``stop_timeout_s`` per process."""
        for name in [n for n in self.processes if n != "server"] + ["server"]:
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

    def client(self, timeout_s: float = 30.0) -> SyncPrefectClient:
        """Prefect's client for this stack's API; use it as a context manager.

        Bound explicitly rather than through ``PREFECT_API_URL``: where that is unset in
        this process, ``get_client()`` would start an ephemeral API and answer for it.
        """
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url, httpx_settings={"timeout": timeout_s})

    def healthy(self) -> bool:
        with self.client(timeout_s=2.0) as client:
            return client.api_healthcheck() is None

    def work_pool(self, name: str) -> WorkPool | None:
        from prefect.exceptions import ObjectNotFound

        with self.client() as client:
            try:
                return client.read_work_pool(name)
            except ObjectNotFound:
                return None

    def workers(self, pool: str = LOCAL_POOL) -> list[Worker]:
        with self.client() as client:
            return client.read_workers_for_work_pool(pool)

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
        """Create the pool through the client when missing (the CLI costs ~5-10 s of imports here)."""
        from prefect.client.schemas.actions import WorkPoolCreate

        if self.work_pool(name) is not None:
            logger.info("work pool %s exists", name)
            return
        with self.client() as client:
            client.create_work_pool(
                WorkPoolCreate(name=name, type=pool_type, base_job_template=base_job_template)
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

    def _start_worker(
        self, pool: str = LOCAL_POOL, name: str = "worker", env: dict[str, str] | None = None
    ) -> None:
        """A process worker for ``pool``; ``env`` adds to its environment (a GPU host's own settings)."""
        self.processes[name] = self._spawn(
            name, "worker", "start", "--pool", pool, "--type", "process", env=env
        )
        logger.info("%s started for %s (log %s)", name, pool, self._log(name))

    # -- plumbing

    def _log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "prefect", *args]

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        environment = {**self._env, **(env or {})}
        return spawn(self._command(*args), cwd=self.config.project_dir, env=environment, log=self._log(name))

    def _prefect(self, *args: str, log_name: str, timeout_s: float = 120) -> None:
        log = self._log(log_name)
        code = run_logged(
            self._command(*args), cwd=self.config.project_dir, env=self._env, log=log, timeout_s=timeout_s
        )
        if code != 0:
            raise StackError(f"prefect {' '.join(args)} failed ({code}):\n{log_tail(log)}")
