"""Dispatch: run a stage as child runs of its deployment on another work pool, all at once.

With ``orchestration.stages = "deployments"`` the retrain pipeline does not train or
embed in its own process: it starts one run of the ``train-modality`` deployment per
modality (the GPU work pool), then one run of ``embed`` per modality, each time submitting
every child before waiting on any, so the two modalities run at the same time on
whatever GPU workers the pool has.

What travels to a child is its form (the same parameters a person would type in the UI),
never settings or credentials: the child's worker reads those from its own environment.
What comes back is only the child's final state; what it produced is read from the
catalog by the caller (see :func:`retina_core.verbs.registered_training`), never from a
pickled return value, so the child may run on another machine with no shared result
storage.

Children are linked to the parent (``as_subflow``), so the Prefect UI shows them under
it, and Prefect's cancellation service cancels them when the parent is cancelled. The
idempotency key holds the parent's run id and attempt: a retried attempt of the same run
starts new children (the failed ones would fail again otherwise), whose trainings reuse
any version already registered for the same inputs by its run key.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL
from prefect.states import Cancelling
from pydantic import BaseModel


@dataclass(frozen=True)
class Child:
    """One child run to start: its name in the parent, the deployment, and its form."""

    label: str
    deployment: str
    params: BaseModel


class ChildRunFailed(RuntimeError):
    """A child run ended in a state other than Completed; the message names it and where to look."""


def run_link(run_id: UUID) -> str:
    """Where a person finds the run: its page in the UI when the UI's address is known."""
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if ui else f"flow run {run_id}"


class DeploymentMissing(LookupError):
    """The API has no deployment of that name: dispatch needs the GPU deployments deployed."""


def start(children: Sequence[Child]) -> list[FlowRun]:
    """Create every child run (Scheduled, linked under the current flow run) without waiting."""
    parent, attempt = flow_run.get_id(), flow_run.get_run_count()
    runs = []
    for child in children:
        try:
            runs.append(
                run_deployment(
                    child.deployment,
                    parameters={"params": child.params.model_dump(mode="json", exclude_none=True)},
                    timeout=0,
                    as_subflow=True,
                    flow_run_name=child.label,
                    idempotency_key=f"{parent}:{attempt}:{child.label}" if parent else None,
                )
            )
        except ObjectNotFound:
            raise DeploymentMissing(
                f"no deployment {child.deployment!r} on this Prefect API: deploy deployments/prefect.yaml's "
                "GPU deployments (python -m deployments.stack --gpu-worker, or prefect deploy), or set "
                "RETINA_ORCHESTRATION__STAGES=inline to train in the pipeline's own process"
            ) from None
    return runs


def wait(
    children: Sequence[Child],
    runs: Sequence[FlowRun],
    poll_s: float,
    stage: str,
    timeout_s: float | None = None,
) -> list[FlowRun]:
    """Poll until every child is final; raise :class:`ChildRunFailed` naming each one that did not complete.

    Waits for all of them even when one fails early: a sibling that completes registers
    its model, which the next attempt then reuses instead of training again. With
    ``timeout_s``, children still not final by then (no worker on their pool, a stuck node)
    are cancelled and named as timed out.
    """
    logger = get_run_logger()
    labels = {run.id: child.label for child, run in zip(children, runs, strict=True)}
    final: dict[UUID, FlowRun] = {}
    seen: dict[UUID, str] = {}
    timed_out: list[UUID] = []
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    artifact = create_progress_artifact(
        progress=0.0, key=f"dispatch-{stage}", description=f"{stage}: child runs finished"
    )
    with get_client(sync_client=True) as client:
        while len(final) < len(runs):
            for run_id in labels.keys() - final.keys():
                run = client.read_flow_run(run_id)
                state = run.state.name if run.state else "unknown"
                if seen.get(run_id) != state:
                    seen[run_id] = state
                    logger.info("%s (%s): %s", labels[run_id], run.name, state)
                if run.state is not None and run.state.is_final():
                    final[run_id] = run
                    update_progress_artifact(artifact, progress=100.0 * len(final) / len(runs))
            if len(final) == len(runs):
                break
            if deadline is not None and time.monotonic() > deadline:
                timed_out = sorted(labels.keys() - final.keys(), key=lambda r: labels[r])
                for run_id in timed_out:
                    client.set_flow_run_state(
                        run_id, Cancelling(message=f"{stage} stage timed out after {timeout_s:.0f} s")
                    )
                break
            time.sleep(poll_s)
    if timed_out:
        raise ChildRunFailed(
            "; ".join(
                f"{labels[r]} did not finish within {timeout_s:.0f} s (last state {seen.get(r)}; cancelled; "
                f"see {run_link(r)})"
                for r in timed_out
            )
        )
    failed = [final[r.id] for r in runs if not final[r.id].state.is_completed()]
    if failed:
        raise ChildRunFailed(
            "; ".join(
                f"{labels[r.id]} ({r.name}) ended {r.state.name}"
                + (f": {r.state.message}" if r.state.message else "")
                + f" (see {run_link(r.id)})"
                for r in failed
            )
        )
    return [final[r.id] for r in runs]


def run_children(
    children: Sequence[Child], poll_s: float, stage: str, timeout_s: float | None = None
) -> list[FlowRun]:
    """Start all children, then wait for all of them: the stage's runs overlap."""
    return wait(children, start(children), poll_s, stage, timeout_s)
