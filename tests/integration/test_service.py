"""The deployed service end to end: scheduled ingestion → event → drift check → triggered retrain → registry.

Real processes over loopback: ``prefect server``, a process worker, S3 on moto's HTTP
server. The test runs twice: with the server's and the catalog's data on SQLite, and on
PostgreSQL (skipped only where no PostgreSQL server listens and none is expected). The
deployments come from the unmodified ``deployments/prefect.yaml``.

How the schedule fires quickly: the test creates a *Scheduled* flow run of ``ingest-aptos``
through the API, due one second later. That is the object Prefect's scheduler service
creates from a schedule, and the worker picks it up the same way, so the path under test
is the real one; only the landing folder is passed as a parameter. A copy of prefect.yaml
with a short interval was the alternative, but the scheduler service creates runs only
every 60 s (its loop) and pre-creates many of them, each an ingestion competing for the
two cores; the scheduler itself is Prefect's code, and the schedules' definitions are
checked in tests/deployments.

The retrain runs with the trigger's parameters from prefect.yaml (``quick: false``,
``min_new_images: 50``); the worker's RETINA_* variables shrink it further than
``quick`` would (32 px and one epoch; quick_preset only ever lowers values). The second drop is smaller than ``min_new_images``: its retrain must
wait for the first one's concurrency slot, then run and skip, so the test shows the
queueing without paying for a second training.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from uuid import UUID

import pytest
from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, FlowRunFilterDeploymentId
from prefect.states import Scheduled

from retina_core import verbs
from retina_core.catalog.registry import list_versions
from retina_core.catalog.repository import image_records
from retina_core.data.synthetic import SynthSpec, write_synthetic
from retina_core.domain import Modality, Source
from tests.integration.conftest import Service

FIRST_DROP = 56  # >= min_new_images (50) in prefect.yaml: retrains
SECOND_DROP = 6  # < min_new_images: its retrain queues behind the first, then skips
OCT_SEED_IMAGES = 60
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
SLOT_WAIT_VISIBLE_S = 5.0  # five worker polls: a wait this long must show AwaitingConcurrencySlot


class ServiceFailure(AssertionError):
    """A bounded wait ran out or a run ended badly; the message says which and where."""


# --- data --------------------------------------------------------------------------------------


def drop_aptos(landing: Path, scratch: Path, count: int, seed: int) -> int:
    """Add ``count`` synthetic APTOS images to the landing folder, images before csv rows.

    A scan that runs meanwhile therefore never sees a row whose image is not there yet.
    """
    out = scratch / f"drop-{seed}"
    write_synthetic(out, SynthSpec(fundus=count, oct=0, size=64, seed=seed))
    for folder in ("train_images", "train_masks"):
        source = out / "aptos" / folder
        if source.is_dir():
            shutil.copytree(source, landing / folder, dirs_exist_ok=True)
    rows = list(csv.reader((out / "aptos" / "train.csv").open()))
    index = landing / "train.csv"
    with index.open("a", newline="") as fh:
        csv.writer(fh).writerows(rows if fh.tell() == 0 else rows[1:])
    return len(rows) - 1


# --- the Prefect API ---------------------------------------------------------------------------


def deployment_id(service: Service, flow: str, name: str) -> str:
    with service.stack.client() as client:
        return str(client.read_deployment_by_name(f"{flow}/{name}").id)


def schedule_run(service: Service, deployment: str, parameters: dict[str, Any]) -> str:
    """A Scheduled run due in one second: what the scheduler service would have created."""
    due = datetime.now(UTC) + timedelta(seconds=1)
    with service.stack.client() as client:
        run = client.create_flow_run_from_deployment(
            UUID(deployment), parameters=parameters, state=Scheduled(scheduled_time=due)
        )
    return str(run.id)


def flow_run(service: Service, run_id: str) -> dict[str, Any]:
    with service.stack.client() as client:
        return client.read_flow_run(UUID(run_id)).model_dump(mode="json")


def runs_of(service: Service, deployment: str) -> list[dict[str, Any]]:
    only = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[UUID(deployment)]))
    with service.stack.client() as client:
        runs = [r.model_dump(mode="json") for r in client.read_flow_runs(flow_run_filter=only)]
    return sorted(runs, key=lambda r: r["created"])


def at(run: dict[str, Any], name: str) -> datetime:
    return datetime.fromisoformat(run[name])


def state_names(service: Service, run_id: str) -> list[str]:
    with service.stack.client() as client:
        return [s.name for s in client.read_flow_run_states(UUID(run_id))]


@dataclass
class RetrainWatch:
    """Samples the retrain runs' states on every poll, so overlap would be seen, not inferred."""

    service: Service
    deployment: str
    max_running: int = 0
    samples: int = 0
    seen: dict[str, set[str]] = field(default_factory=dict)

    def sample(self) -> list[dict[str, Any]]:
        runs = runs_of(self.service, self.deployment)
        running = [r for r in runs if r["state_type"] == "RUNNING"]
        self.max_running = max(self.max_running, len(running))
        self.samples += 1
        for r in runs:
            self.seen.setdefault(r["id"], set()).add(r["state_name"])
        assert len(running) <= 1, f"two retrain-pipeline runs RUNNING at once: {[r['name'] for r in running]}"
        return runs


def wait_until(
    service: Service, what: str, condition: Callable[[], Any], timeout_s: float, watch: RetrainWatch
) -> Any:
    """Poll until ``condition()`` is truthy; fail clearly on timeout or a dead server/worker."""
    deadline = time.monotonic() + timeout_s
    while True:
        watch.sample()
        value = condition()
        if value:
            return value
        for name, process in service.stack.processes.items():
            if process.poll() is not None:
                raise ServiceFailure(f"{name} exited ({process.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise ServiceFailure(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def finished(service: Service, run_id: str, what: str) -> Callable[[], dict[str, Any] | None]:
    """A condition: the run's record once terminal; a run that ended badly fails the test."""

    def check() -> dict[str, Any] | None:
        run = flow_run(service, run_id)
        if run["state_type"] not in TERMINAL:
            return None
        if run["state_type"] != "COMPLETED":
            raise ServiceFailure(f"{what} ended {run['state_name']}: {run['state']['message']}")
        return run

    return check


def new_retrain(watch: RetrainWatch, known: int) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        runs = runs_of(watch.service, watch.deployment)
        return runs[known] if len(runs) > known else None

    return check


def artifacts(service: Service, **where: Any) -> list[dict[str, Any]]:
    with service.stack.client() as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter.model_validate(where))
    return [a.model_dump(mode="json") for a in found]


def check_ui_path(service: Service, retrain: str, run_id: str) -> None:
    """What README's "From the Prefect UI" promises of the retrain-pipeline deployment."""
    # The Custom run form: the flow's parameter model, every field described.
    with service.stack.client() as client:
        schema = client.read_deployment(UUID(retrain)).parameter_openapi_schema
    form = schema["definitions"]["PipelineParams"]["properties"]
    assert {"sources", "quick", "min_new_images", "run_id"} <= set(form)
    assert all(field.get("description") for field in form.values()), form
    # Progress that moved while the run went and ended at 100%: training and embedding bars,
    # and one version of each model's epochs table per epoch (1 epoch here: SMALL_RETRAIN).
    bars = artifacts(service, type={"any_": ["progress"]})
    keys = {a["key"] for a in bars}
    assert {f"{s}-{m}-progress" for s in ("train", "embed") for m in ("fundus", "oct")} <= keys, keys
    assert all(a["data"] == 100.0 for a in bars), [(a["key"], a["data"]) for a in bars]
    for modality in ("fundus", "oct"):
        tables = artifacts(service, key={"like_": f"train-{modality}-epochs-%"})
        assert len(tables) == 1 and "train_loss" in tables[0]["data"], tables
    # Where the report appears: the run's link artifact, a file:// link to the written page.
    links = artifacts(service, key={"any_": ["retina-report"]}, flow_run_id={"any_": [run_id]})
    assert len(links) == 1, links
    target = urlparse(links[0]["data"].split("](", 1)[1].rstrip(")"))
    assert target.scheme == "file" and Path(unquote(target.path)).name == "index.html", target
    assert Path(unquote(target.path)).is_file(), target


# --- the test ----------------------------------------------------------------------------------


def seed_oct(service: Service) -> int:
    """OCT images already in the catalog, ingested before the service started listening.

    The first drop is fundus only and both encoders need data; ingesting these outside
    Prefect emits no event, so they do not trigger a retrain of their own. Seed 7 puts
    normal and diseased patients in every split, which virtual pairing needs.
    """
    out = service.scratch / "oct"
    write_synthetic(out, SynthSpec(fundus=0, oct=OCT_SEED_IMAGES, size=64, seed=7))
    summary = verbs.ingest(service.settings, Source.KERMANY, str(out / "kermany"))
    return summary.accepted


@pytest.mark.slow
def test_scheduled_ingest_triggers_one_retrain_at_a_time_and_registers_models(service: Service) -> None:
    settings = service.settings
    oct_images = seed_oct(service)
    assert oct_images == OCT_SEED_IMAGES
    ingest = deployment_id(service, "ingest", "ingest-aptos")
    retrain = deployment_id(service, "retrain-pipeline", "retrain-pipeline")
    watch = RetrainWatch(service, retrain)
    wait_until(service, "the worker to register", lambda: service.stack.workers(), 90, watch)

    # 1. A drop lands; the scheduled ingestion picks it up and emits retina.dataset.updated.
    first = drop_aptos(service.landing, service.scratch, FIRST_DROP, seed=11)
    location = {"params": {"source": "aptos", "location": str(service.landing)}}
    ingest_1 = schedule_run(service, ingest, location)
    wait_until(service, "the first ingestion", finished(service, ingest_1, "ingest #1"), 150, watch)

    # 2. The event triggers check-drift, whose verdict triggers retrain-pipeline with prefect.yaml's
    # trigger parameters (no champion yet: nothing to compare with, so no drift).
    retrain_1 = wait_until(service, "the triggered retrain", new_retrain(watch, 0), 120, watch)
    params_1 = retrain_1["parameters"]["params"]
    assert {k: v for k, v in params_1.items() if k != "drift_summary"} == {
        "quick": False,
        "min_new_images": 50,
        "new_images": first,
        "drifted": False,
        "champion_degraded": False,
    }
    assert "no champion yet" in params_1["drift_summary"]

    # 3. A second drop while the retrain runs: its retrain must wait for the slot.
    wait_until(
        service,
        "the retrain to start",
        lambda: flow_run(service, retrain_1["id"])["state_type"] in {"RUNNING", *TERMINAL},
        120,
        watch,
    )
    second = drop_aptos(service.landing, service.scratch, SECOND_DROP, seed=12)
    ingest_2 = schedule_run(service, ingest, location)
    wait_until(service, "the second ingestion", finished(service, ingest_2, "ingest #2"), 150, watch)
    retrain_2 = wait_until(service, "the second triggered retrain", new_retrain(watch, 1), 120, watch)
    assert retrain_2["parameters"]["params"]["new_images"] == second
    assert retrain_2["parameters"]["params"]["drifted"] is False  # too few new images to test

    # 4. Both complete, one after the other.
    done_1 = wait_until(
        service, "the first retrain", finished(service, retrain_1["id"], "retrain #1"), 420, watch
    )
    done_2 = wait_until(
        service, "the second retrain", finished(service, retrain_2["id"], "retrain #2"), 120, watch
    )
    assert len(runs_of(service, retrain)) == 2, "one retrain per accepted drop, no more"
    assert watch.max_running == 1
    first_ended = at(done_1, "end_time")
    assert at(done_2, "start_time") >= first_ended, "the queued retrain started before the first ended"
    assert at(done_2, "created") < first_ended, "the second retrain arrived too late to test the queue"
    # The worker polls every second (PREFECT_WORKER_QUERY_SECONDS=1 in the stack), so a
    # second run that was due for more than a few seconds while the first held the slot must
    # have been refused it at least once. On a slow machine the second run can become due
    # just before the first ends; the worker then never asks while the slot is taken, and the
    # order asserted above is all there is to see.
    due_2 = max(at(done_2, "created"), at(done_2, "expected_start_time"))
    if (first_ended - due_2).total_seconds() >= SLOT_WAIT_VISIBLE_S:
        assert "AwaitingConcurrencySlot" in state_names(service, retrain_2["id"]), (
            f"due {first_ended - due_2} before the first retrain ended, never refused the slot",
            watch.seen,
        )

    # 5. What the README's UI path shows: the form, progress artifacts at 100%, the report link.
    check_ui_path(service, retrain, retrain_1["id"])

    # 6. The catalog and the store: one version per model, files matching their rows.
    engine = verbs.catalog_engine(settings)
    store = verbs.curated_store(settings)
    versions = {(v.name, v.version): v for v in list_versions(engine)}
    expected = {("fundus_cnn", 1), ("oct_cnn", 1), ("fusion_head", 1)}
    assert set(versions) == expected, "exactly one version per model: the second retrain skipped"
    for version in versions.values():
        assert version.status == "champion" and version.data_version is not None
        weights = store.get_bytes(f"{version.object_prefix}/weights.safetensors")
        assert hashlib.sha256(weights).hexdigest() == version.weights_sha256
    assert len(image_records(engine, Modality.FUNDUS)) == first + second
    assert len(image_records(engine, Modality.OCT)) == oct_images
    assert [i.key for i in store.list("reports/") if i.key.endswith("/index.html")], "no report in the store"
