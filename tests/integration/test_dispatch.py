"""Dispatch to the GPU pool on a real server: the pipeline's heavy stages as concurrent child runs.

The stack of :func:`tests.integration.conftest.dispatch_service`: a Prefect server and the
catalog on PostgreSQL, S3 on moto's HTTP server, a ``retina-local`` process worker whose
environment says ``RETINA_ORCHESTRATION__STAGES=deployments``, and a ``retina-gpu``
process worker standing in for the GPU pool. Everything the assertions use comes from the
Prefect API (runs, states, pools, parents) and the catalog, as an operator would see it.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.states import Cancelling

from retina_core import verbs
from retina_core.catalog.registry import list_versions
from retina_core.data.synthetic import SynthSpec, write_synthetic
from retina_core.domain import Source
from tests.integration.conftest import Service
from tests.integration.test_service import (
    FIRST_DROP,
    TERMINAL,
    RetrainWatch,
    ServiceFailure,
    at,
    deployment_id,
    drop_aptos,
    finished,
    flow_run,
    new_retrain,
    runs_of,
    schedule_run,
    seed_oct,
    wait_until,
)

GPU_POOL = "retina-gpu"
MODELS = {"fundus_cnn", "oct_cnn", "fusion_head"}


def children_of(service: Service, parent: str) -> list[dict[str, Any]]:
    """The flow runs Prefect shows under ``parent`` (linked through a task run of the parent)."""
    only = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[UUID(parent)]))
    with service.stack.client() as client:
        return [r.model_dump(mode="json") for r in client.read_flow_runs(flow_run_filter=only)]


def of_deployment(runs: list[dict[str, Any]], deployment: str) -> list[dict[str, Any]]:
    return sorted((r for r in runs if r["deployment_id"] == deployment), key=lambda r: r["name"])


def gpu_worker_submitted(service: Service, run_id: str) -> bool:
    """The retina-gpu worker's own log names the run it picked up."""
    return run_id in (service.stack.log_dir / "worker-gpu.log").read_text(errors="replace")


def versions_by_model(service: Service) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for v in list_versions(verbs.catalog_engine(service.settings)):
        found.setdefault(v.name, []).append(v.version)
    return found


def start_pipeline(service: Service, retrain: str, params: dict[str, Any]) -> str:
    with service.stack.client() as client:
        run = client.create_flow_run_from_deployment(UUID(retrain), parameters={"params": params})
    return str(run.id)


def wait_workers(service: Service, watch: RetrainWatch) -> None:
    for pool in ("retina-local", GPU_POOL):
        wait_until(
            service, f"the {pool} worker to register", lambda p=pool: service.stack.workers(p), 90, watch
        )


@pytest.mark.slow
@pytest.mark.postgres
def test_dataset_update_trains_both_encoders_concurrently_on_the_gpu_pool(dispatch_service: Service) -> None:
    service = dispatch_service
    seed_oct(service)
    ingest = deployment_id(service, "ingest", "ingest-aptos")
    retrain = deployment_id(service, "retrain-pipeline", "retrain-pipeline")
    train = deployment_id(service, "train-modality", "train-modality")
    embed = deployment_id(service, "embed", "embed")
    watch = RetrainWatch(service, retrain)
    wait_workers(service, watch)

    drop_aptos(service.landing, service.scratch, FIRST_DROP, seed=11)
    run = schedule_run(service, ingest, {"params": {"source": "aptos", "location": str(service.landing)}})
    wait_until(service, "the ingestion", finished(service, run, "ingest"), 150, watch)
    pipeline = wait_until(service, "the triggered retrain", new_retrain(watch, 0), 120, watch)
    done = wait_until(service, "the retrain", finished(service, pipeline["id"], "retrain"), 600, watch)
    assert done["work_pool_name"] == "retina-local"

    children = children_of(service, pipeline["id"])
    trains, embeds = of_deployment(children, train), of_deployment(children, embed)
    assert [r["name"] for r in trains] == ["train-fundus", "train-oct"], children
    assert [r["name"] for r in embeds] == ["embed-fundus", "embed-oct"], children
    for child in trains + embeds:
        assert child["state_type"] == "COMPLETED", child
        assert child["work_pool_name"] == GPU_POOL, child
        assert gpu_worker_submitted(service, child["id"]), (
            f"{child['name']} not picked up by the retina-gpu worker"
        )
    # Both trainings ran at the same time: each started before the other ended.
    fundus, oct_ = trains
    assert at(fundus, "start_time") < at(oct_, "end_time") and at(oct_, "start_time") < at(
        fundus, "end_time"
    ), (
        "the two trainings did not overlap",
        [(r["name"], r["start_time"], r["end_time"]) for r in trains],
    )
    # What the parent did after the children: the fusion head, registered once both had ended.
    trained_by = max(at(r, "end_time") for r in trains)
    versions = {v.name: v for v in list_versions(verbs.catalog_engine(service.settings))}
    assert set(versions) == MODELS
    assert versions["fusion_head"].created_at > trained_by
    assert datetime.fromisoformat(done["end_time"]) > versions["fusion_head"].created_at


@pytest.mark.slow
@pytest.mark.postgres
def test_cancel_and_kill_reach_the_children_and_a_rerun_completes_without_duplicates(
    dispatch_service: Service,
) -> None:
    service = dispatch_service
    data = service.scratch / "seed"
    write_synthetic(data, SynthSpec(fundus=FIRST_DROP, oct=60, size=64, seed=7))
    verbs.ingest(service.settings, Source.APTOS, str(data / "aptos"))
    verbs.ingest(service.settings, Source.KERMANY, str(data / "kermany"))
    retrain = deployment_id(service, "retrain-pipeline", "retrain-pipeline")
    train = deployment_id(service, "train-modality", "train-modality")
    watch = RetrainWatch(service, retrain)
    wait_workers(service, watch)
    params = {"min_new_images": 0, "run_id": "killed"}

    # Cancelling the parent cancels its children (Prefect's cancellation service, through the link).
    # 50 epochs: still training when the cancellation arrives, whatever the machine's speed.
    long = {"run_id": "cancelled", "train_epochs": 50, "train_patience": 50}
    cancelled = start_pipeline(service, retrain, params | long)
    wait_until(
        service,
        "both trainings to run",
        lambda: (
            [r["state_type"] for r in of_deployment(children_of(service, cancelled), train)]
            == ["RUNNING", "RUNNING"]
        ),
        240,
        watch,
    )
    with service.stack.client() as client:
        client.set_flow_run_state(UUID(cancelled), Cancelling(message="cancelled by the test"))
    gone = wait_until(
        service,
        "the children to be cancelled",
        lambda: (
            (runs := of_deployment(children_of(service, cancelled), train))
            and all(r["state_type"] in TERMINAL for r in runs)
            and runs
        ),
        120,
        watch,
    )
    assert [r["state_type"] for r in gone] == ["CANCELLED", "CANCELLED"], [r["state"] for r in gone]
    wait_until(
        service,
        "the parent to be cancelled",
        lambda: flow_run(service, cancelled)["state_type"] == "CANCELLED",
        60,
        watch,
    )
    assert versions_by_model(service) == {}, "a cancelled retrain registered a model"

    first = start_pipeline(service, retrain, params)

    def a_running_training() -> dict[str, Any] | None:
        running = [
            r for r in of_deployment(children_of(service, first), train) if r["state_type"] == "RUNNING"
        ]
        return next((r for r in running if r["infrastructure_pid"]), None)

    victim = wait_until(service, "a training child to run", a_running_training, 240, watch)
    pid = int(victim["infrastructure_pid"].rsplit(":", 1)[-1])
    os.kill(pid, signal.SIGKILL)  # the flow run's process on the GPU worker, as an OOM kill would

    def final(run_id: str) -> dict[str, Any] | None:
        run = flow_run(service, run_id)
        return run if run["state_type"] in TERMINAL else None

    ended = wait_until(service, "the pipeline to end", lambda: final(first), 600, watch)
    assert ended["state_type"] in {"FAILED", "CRASHED"}, ended["state"]
    message = ended["state"]["message"] or ""
    assert victim["name"] in message and victim["id"] in message, message
    killed = flow_run(service, victim["id"])
    assert killed["state_type"] in {"CRASHED", "FAILED"}, killed["state"]
    assert killed["state_name"] in message, message

    second = start_pipeline(service, retrain, params | {"run_id": "rerun"})
    try:
        wait_until(service, "the rerun", finished(service, second, "rerun"), 600, watch)
    except ServiceFailure as failure:
        raise ServiceFailure(f"{failure}\n{service.logs()}") from failure
    assert {name: len(v) for name, v in versions_by_model(service).items()} == dict.fromkeys(MODELS, 1)
    # The rerun dispatched only what the first attempt did not finish.
    rerun_trains = of_deployment(children_of(service, second), train)
    assert [r["name"] for r in rerun_trains] == [victim["name"]], rerun_trains
    assert len(runs_of(service, train)) == 5  # 2 cancelled, 2 in the killed attempt, 1 in the rerun
