"""Dispatch's contract on Prefect's real (ephemeral) API, with the test standing in for the workers.

The children are created through ``run_deployment`` exactly as in production; no worker
picks them up, so the test moves them to their final states itself, the way a GPU worker
would report them. The service-level behaviour (real workers, a killed process, a
cancelled parent) is in tests/integration/test_dispatch.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Completed, Crashed
from pydantic import BaseModel

from flows.dispatch import Child, ChildRunFailed, DeploymentMissing, run_children
from tests.flows.conftest import flow_run_artifacts


class Form(BaseModel):
    modality: str
    secret_free: bool = True


@flow(name="dispatch-child")
def child_flow(params: Form) -> None:  # deployed, never run here
    return None


def deployment(name: str) -> UUID:
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(child_flow)
        return client.create_deployment(flow_id=flow_id, name=name)


def play_worker(
    deployment_id: UUID, outcomes: dict[str, object], seen: dict[str, object]
) -> threading.Thread:
    """Once this test's children exist (Scheduled, named), set each one's final state by name.

    The test API's database is reused across test sessions, so older runs of the same
    deployment may be there: only runs created after the worker started are this test's.
    """
    since = datetime.now(UTC)

    def work() -> None:
        waiting = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
        )
        of_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        deadline = time.monotonic() + 60
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                runs = client.read_flow_runs(flow_run_filter=waiting, deployment_filter=of_deployment)
                runs = [r for r in runs if r.created is not None and r.created >= since]
                if {r.name for r in runs} >= outcomes.keys():
                    for run in runs:
                        seen[run.name] = run
                        client.set_flow_run_state(run.id, outcomes[run.name], force=True)
                    return
                time.sleep(0.1)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_children_are_linked_awaited_together_and_a_crash_is_named(prefect_api: None) -> None:
    target = deployment("gpu-stage")
    seen: dict[str, object] = {}
    worker = play_worker(
        target,
        {"train-fundus": Completed(), "train-oct": Crashed(message="the process was killed (SIGKILL)")},
        seen,
    )

    @flow(name="dispatch-parent")
    def parent() -> None:
        run_children(
            [Child(f"train-{m}", "dispatch-child/gpu-stage", Form(modality=m)) for m in ("fundus", "oct")],
            poll_s=0.1,
            stage="train",
            timeout_s=120,  # a safety net for the test only: the play worker answers within seconds
        )

    state = parent(return_state=True)
    worker.join()
    assert state.is_failed()
    with pytest.raises(ChildRunFailed) as failure:
        state.result()
    message = str(failure.value)
    oct_run = seen["train-oct"]
    assert "train-oct (train-oct) ended Crashed: the process was killed (SIGKILL)" in message
    assert str(oct_run.id) in message and "train-fundus" not in message  # only the child that failed
    for run in seen.values():
        assert run.parent_task_run_id is not None  # shown under the parent in the UI
        assert run.parameters == {
            "params": {"modality": run.name.removeprefix("train-"), "secret_free": True}
        }
        assert run.idempotency_key.startswith(str(state.state_details.flow_run_id))
    progress = flow_run_artifacts(state.state_details.flow_run_id)["dispatch-train"]
    assert progress.data == 100.0


def test_a_missing_deployment_says_what_to_deploy(prefect_api: None) -> None:
    @flow(name="dispatch-nowhere")
    def parent() -> None:
        run_children([Child("train-fundus", "train-modality/nowhere", Form(modality="fundus"))], 0.1, "train")

    with pytest.raises(DeploymentMissing, match=r"no deployment 'train-modality/nowhere'.*STAGES=inline"):
        parent()


def test_the_command_without_a_server_says_in_one_line_what_to_deploy(tmp_path) -> None:
    """``retina pipeline`` with dispatch on but only the ephemeral API: exit 2, one line, no traceback."""
    env = os.environ | {"RETINA_HOME": str(tmp_path / "home"), "RETINA_ORCHESTRATION__STAGES": "deployments"}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "retina_cli", "pipeline"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no deployment 'train-modality/train-modality'") and "STAGES=inline" in last


def test_children_no_worker_picks_up_are_cancelled_and_named_after_the_timeout(prefect_api: None) -> None:
    deployment("no-worker")

    @flow(name="dispatch-parent-timeout")
    def parent() -> None:
        run_children(
            [Child("embed-oct", "dispatch-child/no-worker", Form(modality="oct"))], 0.1, "embed", 1.0
        )

    state = parent(return_state=True)
    with pytest.raises(
        ChildRunFailed, match=r"embed-oct did not finish within 1 s \(last state Scheduled; cancelled"
    ):
        state.result()
    with get_client(sync_client=True) as client:
        child = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [state.state_details.flow_run_id]})
        )
    assert [c.state.type for c in child] == [StateType.CANCELLED], [c.state for c in child]
