"""The service as it is deployed: a real Prefect server on PostgreSQL, a process worker, S3 over HTTP.

Everything is started for one test and stopped on every exit. The worker's environment
points the library at moto's S3 server and a throwaway catalog database and shrinks the
retrain (32 px, one epoch, 100 bootstrap resamples) so that it fits a 2-core machine.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

import tests.support.prefect  # noqa: F401  (sets the Prefect environment before prefect is imported)
from retina_core.config import Settings
from tests.support.moto import FAKE_ACCESS_KEY_ID, FAKE_REGION, FAKE_SECRET_ACCESS_KEY
from tests.support.postgres import fresh_database, unavailable

ROOT = Path(__file__).resolve().parents[2]
# deployments/ is not an installed package; `python -m pytest` has the root on sys.path, `pytest` not.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deployments.stack import LocalStack, StackConfig, log_tail  # noqa: E402

DEPLOYMENTS = ("ingest-aptos", "check-drift", "retrain-pipeline")
DISPATCH_DEPLOYMENTS = (*DEPLOYMENTS, "train-modality", "embed")

SMALL_RETRAIN = {
    # Production architectures, shrunken inputs: the point is the wiring, not the accuracy.
    "RETINA_TRAIN__DEVICE": "cpu",
    "RETINA_TRAIN__NUM_WORKERS": "0",
    "RETINA_TRAIN__FUNDUS__IMAGE_SIZE": "32",
    "RETINA_TRAIN__FUNDUS__EPOCHS": "1",
    "RETINA_TRAIN__FUNDUS__BATCH_SIZE": "16",
    "RETINA_TRAIN__OCT__IMAGE_SIZE": "32",
    "RETINA_TRAIN__OCT__EPOCHS": "1",
    "RETINA_TRAIN__OCT__BATCH_SIZE": "16",
    "RETINA_EVALUATION__BOOTSTRAP": "100",
    "RETINA_EXPLAIN__MAX_IMAGES": "8",
    "RETINA_EXPLAIN__EXAMPLES_PER_CLASS": "1",
    "RETINA_FUSION__EPOCHS": "10",
}


@dataclass(frozen=True)
class ServiceDatabases:
    """Where the Prefect server and the catalog keep their data for this test."""

    backend: str  # "sqlite" or "postgres": the test's parameter, never a silent fallback
    prefect_url: str | None  # None: SQLite under the server's PREFECT_HOME
    catalog_url: str


@dataclass(frozen=True)
class Service:
    stack: LocalStack
    settings: Settings  # the worker's settings, for reading the catalog and the store from the test
    landing: Path
    scratch: Path
    databases: ServiceDatabases

    def logs(self, lines: int = 60) -> str:
        """Tails of the server's and the worker's logs (the worker's holds the flow runs' output)."""
        return "\n".join(
            f"--- {name}.log (last {lines} lines) ---\n{log_tail(self.stack.log_dir / f'{name}.log', lines)}"
            for name in ("server", "worker", "worker-gpu", "deploy")
        )


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Prefect's ephemeral API (for flows run in this process) with the per-flow heartbeat off."""
    from flows.runtime import fast_flows

    with fast_flows():
        yield


def asyncpg_url(url: str) -> str:
    """The Prefect server talks to PostgreSQL through asyncpg, the catalog through psycopg."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


@contextlib.contextmanager
def _postgres() -> Iterator[ServiceDatabases]:
    """Two fresh PostgreSQL databases: the Prefect server's (asyncpg) and the catalog's (psycopg)."""
    if importlib.util.find_spec("asyncpg") is None:
        unavailable("asyncpg is not installed (the Prefect server's PostgreSQL driver)")
    with fresh_database() as prefect_db, fresh_database() as catalog_db:
        yield ServiceDatabases("postgres", asyncpg_url(prefect_db), catalog_db)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def service_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceDatabases]:
    """The deployed service on each database it supports: SQLite (what ``make serve`` uses by
    default) and PostgreSQL (production). The PostgreSQL variant skips only when no server
    listens and none is expected; it never runs on SQLite instead."""
    if request.param == "sqlite":
        yield ServiceDatabases("sqlite", None, f"sqlite:///{tmp_path / 'catalog.db'}")
        return
    with _postgres() as databases:
        yield databases


def service_environment(settings: Settings, databases: ServiceDatabases) -> dict[str, str]:
    env = {
        **SMALL_RETRAIN,
        "RETINA_HOME": str(settings.home),
        "RETINA_STORAGE_URL": str(settings.storage_url),
        "RETINA_S3_ENDPOINT_URL": str(settings.s3_endpoint_url),
        "RETINA_DATABASE_URL": str(settings.database_url),
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": FAKE_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        # A held retrain retries for its slot every 2 s instead of 30 s.
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
        # The test schedules its own runs; the nightly schedules must not add any.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    if databases.prefect_url is not None:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = databases.prefect_url
    return env


def _settings(tmp_path: Path, databases: ServiceDatabases, s3_bucket: tuple[str, str]) -> Settings:
    endpoint_url, bucket = s3_bucket
    return Settings(
        home=tmp_path / "home",
        storage_url=f"s3://{bucket}/retina",
        s3_endpoint_url=endpoint_url,
        database_url=databases.catalog_url,
    )


@contextlib.contextmanager
def running_service(
    tmp_path: Path, databases: ServiceDatabases, config: StackConfig, settings: Settings
) -> Iterator[Service]:
    stack = LocalStack(config)
    landing = tmp_path / "landing" / "aptos"
    try:
        stack.start()
        yield Service(stack, settings, landing, tmp_path / "scratch", databases)
    finally:
        with contextlib.suppress(Exception):
            stack.stop()


@pytest.fixture
def service(
    tmp_path: Path, service_databases: ServiceDatabases, s3_bucket: tuple[str, str]
) -> Iterator[Service]:
    """Server, pool, the two deployments from prefect.yaml and a worker; stopped on every exit."""
    settings = _settings(tmp_path, service_databases, s3_bucket)
    config = StackConfig(
        prefect_home=tmp_path / "prefect",
        deployment_names=DEPLOYMENTS,
        create_landing=False,
        startup_timeout_s=150,
        stop_timeout_s=10,
        extra_env=service_environment(settings, service_databases),
    )
    with running_service(tmp_path, service_databases, config, settings) as running:
        yield running


@pytest.fixture
def postgres_databases() -> Iterator[ServiceDatabases]:
    """The production databases only: PostgreSQL for the Prefect server and the catalog."""
    with _postgres() as databases:
        yield databases


@pytest.fixture
def dispatch_service(
    tmp_path: Path, postgres_databases: ServiceDatabases, s3_bucket: tuple[str, str]
) -> Iterator[Service]:
    """The service as a team with a GPU pool runs it: retina-local dispatches, retina-gpu trains.

    Two process pools with one worker each; ``retina-gpu`` stands in for the GPU pool the
    way infra/compose.yaml's ``worker-gpu`` does (a process worker on that pool). The
    local worker's environment turns dispatch on; both read the same connection settings.
    """
    settings = _settings(tmp_path, postgres_databases, s3_bucket)
    env = service_environment(settings, postgres_databases) | {
        "RETINA_ORCHESTRATION__STAGES": "deployments",
        "RETINA_ORCHESTRATION__DISPATCH_POLL_SECONDS": "1",
        # two trainings share the machine's 2 cores: one thread each instead of two fighting
        "OMP_NUM_THREADS": "1",
        # a cancelled parent's children are cancelled on the cleanup service's next loop
        "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS": "2",
    }
    config = StackConfig(
        prefect_home=tmp_path / "prefect",
        deployment_names=DISPATCH_DEPLOYMENTS,
        deploy_pools=None,
        create_landing=False,
        startup_timeout_s=150,
        stop_timeout_s=10,
        extra_env=env,
        gpu_worker=True,
    )
    with running_service(tmp_path, postgres_databases, config, settings) as running:
        cpu_stand_in(running.stack, ("train-modality/train-modality", "embed/embed"))
        yield running


def cpu_stand_in(stack: LocalStack, deployments: tuple[str, ...]) -> None:
    """What an operator changes to run the GPU deployments on a CPU worker: the device variable.

    prefect.yaml's GPU job variables set ``RETINA_TRAIN__DEVICE=cuda`` (a GPU node without
    a GPU fails loudly); this machine has none, so the stand-in pool's runs use the CPU.
    """
    from prefect.client.schemas.actions import DeploymentUpdate

    with stack.client() as client:
        for name in deployments:
            deployment = client.read_deployment_by_name(name)
            variables = dict(deployment.job_variables or {})
            variables["env"] = {**variables.get("env", {}), "RETINA_TRAIN__DEVICE": "cpu"}
            client.update_deployment(deployment.id, DeploymentUpdate(job_variables=variables))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """On failure, attach the server's and worker's log tails to the report."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    service = funcargs.get("service") or funcargs.get("dispatch_service")
    if report.failed and isinstance(service, Service):
        report.sections.append(("service logs", service.logs()))
    return report
