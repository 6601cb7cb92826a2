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
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.states import Cancelling

from retina_core import verbs
from retina_core.catalog.registry import champion, list_versions
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


def versions_by_model(service: Service) -> dict[str, tuple[int, ...]]:
    found: dict[str, list[int]] = {}
    for v in list_versions(verbs.catalog_engine(service.settings)):
        found.setdefault(v.name, []).append(v.version)
    return {name: tuple(sorted(versions)) for name, versions in found.items()}


def start_pipeline(service: Service, retrain: str, params: dict[str, Any]) -> str:
    with service.stack.client() as client:
        run = client.create_flow_run_from_deployment(UUID(retrain), parameters={"params": params})
    return str(run.id)


@dataclass(frozen=True)
class Deployments:
    ingest: str
    retrain: str
    train: str
    embed: str

    @classmethod
    def of(cls, service: Service) -> Deployments:
        return cls(
            ingest=deployment_id(service, "ingest", "ingest-aptos"),
            retrain=deployment_id(service, "retrain-pipeline", "retrain-pipeline"),
            train=deployment_id(service, "train-modality", "train-modality"),
            embed=deployment_id(service, "embed", "embed"),
        )


@pytest.mark.slow
@pytest.mark.postgres
def test_the_gpu_pool_trains_on_updates_and_cancel_kill_and_rerun_leave_no_duplicates(
    dispatch_service: Service,
) -> None:
    """One stack for the three stories (its start-up is a third of a story's time):
    a dataset update retrains on the GPU pool; a cancelled retrain cancels its trainings;
    a killed training fails its retrain by name and a rerun completes it without duplicates."""
    service = dispatch_service
    seed_oct(service)
    ids = Deployments.of(service)
    watch = RetrainWatch(service, ids.retrain)
    for pool in ("retina-local", GPU_POOL):
        wait_until(
            service, f"the {pool} worker to register", lambda p=pool: service.stack.workers(p), 90, watch
        )

    a_dataset_update_trains_both_encoders_concurrently_on_the_gpu_pool(service, ids, watch)
    assert versions_by_model(service) == dict.fromkeys(MODELS, (1,))
    cancelling_the_retrain_cancels_its_trainings(service, ids, watch)
    assert versions_by_model(service) == dict.fromkeys(MODELS, (1,)), "a cancelled retrain registered a model"
    a_killed_training_fails_the_retrain_by_name_and_a_rerun_completes_it(service, ids, watch)
    # One new version per encoder, no more; the fusion head is new only if an encoder it
    # reads (the champion) changed, else its inputs are the first retrain's and it is reused.
    engine = verbs.catalog_engine(service.settings)
    moved = any(champion(engine, name).version == 2 for name in ("fundus_cnn", "oct_cnn"))
    expected = {"fundus_cnn": (1, 2), "oct_cnn": (1, 2), "fusion_head": (1, 2) if moved else (1,)}
    assert versions_by_model(service) == expected, "one new version per retrained model, no more"
    assert len(runs_of(service, ids.train)) == 7  # 2 per retrain (event, cancelled, killed), 1 in the rerun


def a_dataset_update_trains_both_encoders_concurrently_on_the_gpu_pool(
    service: Service, ids: Deployments, watch: RetrainWatch
) -> None:
    drop_aptos(service.landing, service.scratch, FIRST_DROP, seed=11)
    run = schedule_run(service, ids.ingest, {"params": {"source": "aptos", "location": str(service.landing)}})
    wait_until(service, "the ingestion", finished(service, run, "ingest"), 150, watch)
    pipeline = wait_until(service, "the triggered retrain", new_retrain(watch, 0), 120, watch)
    done = wait_until(service, "the retrain", finished(service, pipeline["id"], "retrain"), 600, watch)
    assert done["work_pool_name"] == "retina-local"

    children = children_of(service, pipeline["id"])
    trains, embeds = of_deployment(children, ids.train), of_deployment(children, ids.embed)
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
    overlapped = at(fundus, "start_time") < at(oct_, "end_time") and at(oct_, "start_time") < at(
        fundus, "end_time"
    )
    assert overlapped, [(r["name"], r["start_time"], r["end_time"]) for r in trains]
    # What the parent did after the children: the fusion head, registered once both had ended.
    trained_by = max(at(r, "end_time") for r in trains)
    versions = {v.name: v for v in list_versions(verbs.catalog_engine(service.settings))}
    assert set(versions) == MODELS
    assert versions["fusion_head"].created_at > trained_by
    assert datetime.fromisoformat(done["end_time"]) > versions["fusion_head"].created_at


def cancelling_the_retrain_cancels_its_trainings(
    service: Service, ids: Deployments, watch: RetrainWatch
) -> None:
    """Prefect's cancellation service follows the parent link to the GPU pool's runs.

    50 epochs: other inputs than the first retrain's (so it trains), and still training when
    the cancellation arrives, whatever the machine's speed.
    """
    params = {"min_new_images": 0, "run_id": "cancelled", "train_epochs": 50, "train_patience": 50}
    cancelled = start_pipeline(service, ids.retrain, params)

    def trainings() -> list[dict[str, Any]]:
        return of_deployment(children_of(service, cancelled), ids.train)

    running = lambda: [r["state_type"] for r in trainings()] == ["RUNNING", "RUNNING"]  # noqa: E731
    wait_until(service, "both trainings to run", running, 240, watch)
    with service.stack.client() as client:
        client.set_flow_run_state(UUID(cancelled), Cancelling(message="cancelled by the test"))
    ended = lambda: (runs := trainings()) and all(r["state_type"] in TERMINAL for r in runs) and runs  # noqa: E731
    gone = wait_until(service, "the trainings to be cancelled", ended, 120, watch)
    assert [r["state_type"] for r in gone] == ["CANCELLED", "CANCELLED"], [r["state"] for r in gone]
    parent_cancelled = lambda: flow_run(service, cancelled)["state_type"] == "CANCELLED"  # noqa: E731
    wait_until(service, "the retrain to be cancelled", parent_cancelled, 60, watch)


def a_killed_training_fails_the_retrain_by_name_and_a_rerun_completes_it(
    service: Service, ids: Deployments, watch: RetrainWatch
) -> None:
    """2 epochs: other inputs again, so both encoders train; one is killed mid-run."""
    params = {"min_new_images": 0, "run_id": "killed", "train_epochs": 2}
    first = start_pipeline(service, ids.retrain, params)

    def a_running_training() -> dict[str, Any] | None:
        trainings = of_deployment(children_of(service, first), ids.train)
        return next((r for r in trainings if r["state_type"] == "RUNNING" and r["infrastructure_pid"]), None)

    victim = wait_until(service, "a training child to run", a_running_training, 240, watch)
    pid = int(victim["infrastructure_pid"].rsplit(":", 1)[-1])
    os.kill(pid, signal.SIGKILL)  # the flow run's process on the GPU worker, as an OOM kill would

    def final() -> dict[str, Any] | None:
        run = flow_run(service, first)
        return run if run["state_type"] in TERMINAL else None

    ended = wait_until(service, "the retrain to end", final, 600, watch)
    assert ended["state_type"] in {"FAILED", "CRASHED"}, ended["state"]
    message = ended["state"]["message"] or ""
    assert victim["name"] in message and victim["id"] in message, message
    killed = flow_run(service, victim["id"])
    assert killed["state_type"] in {"CRASHED", "FAILED"}, killed["state"]
    assert killed["state_name"] in message, message

    second = start_pipeline(service, ids.retrain, params | {"run_id": "rerun"})
    try:
        wait_until(service, "the rerun", finished(service, second, "rerun"), 600, watch)
    except ServiceFailure as failure:
        raise ServiceFailure(f"{failure}\n{service.logs()}") from failure
    # The rerun dispatched only what the first attempt did not finish.
    rerun_trains = of_deployment(children_of(service, second), ids.train)
    assert [r["name"] for r in rerun_trains] == [victim["name"]], rerun_trains
