"""Fan a task out over chunks on the configured engine: Prefect's thread pool, or Dask.

``RETINA_ORCHESTRATION__TASK_RUNNER=dask`` sends the mapped chunks of ``ingest`` and
``embed`` to Dask workers through prefect-dask's ``DaskTaskRunner``: the scheduler at
``RETINA_ORCHESTRATION__DASK_ADDRESS`` when one is given, else a ``distributed.LocalCluster``
of ``dask_workers`` processes started for the run. The default runs them on the flow's own
task runner (threads), as before. The runner is chosen here, from the settings the flow
built inside the run, rather than on the ``@flow`` decorator, which is fixed at import.

Everything a mapped task receives (settings, chunk, plan) travels to the workers by
pickle, and results come back the same way: keep them plain data and object-store keys.
Dask workers build nothing from their own environment; they run the tasks with the
arguments they are given, so they need the project installed and reach the same catalog
and object store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from prefect import Task, unmapped
from prefect.task_runners import TaskRunner

from retina_core.config import OrchestrationSettings

R = TypeVar("R")


def dask_runner(orchestration: OrchestrationSettings) -> TaskRunner:
    """prefect-dask's runner: the existing scheduler, or a local cluster of worker processes."""
    from prefect_dask import DaskTaskRunner

    if orchestration.dask_address:
        return DaskTaskRunner(address=orchestration.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": orchestration.dask_workers,
            "processes": True,
            "threads_per_worker": 1,
            "dashboard_address": None,
        }
    )


class ChunkMapper(Protocol):
    def __call__(
        self, task: Task[..., R], fixed: dict[str, Any], mapped: dict[str, Sequence[Any]]
    ) -> list[R]:
        """``task`` once per position of the ``mapped`` lists (``fixed`` shared); results in order."""
        ...


@contextmanager
def chunk_mapper(orchestration: OrchestrationSettings) -> Iterator[ChunkMapper]:
    """A mapper over the configured runner, open for the block: one Dask cluster per flow run,
    however many fan-outs the flow makes (a local cluster takes seconds to start)."""
    if orchestration.task_runner == "thread":
        yield _thread_map
        return
    with dask_runner(orchestration) as runner:

        def dask_map(task: Task[..., R], fixed: dict[str, Any], mapped: dict[str, Sequence[Any]]) -> list[R]:
            return [future.result() for future in runner.map(task, _parameters(fixed, mapped))]

        yield dask_map


def _thread_map(task: Task[..., R], fixed: dict[str, Any], mapped: dict[str, Sequence[Any]]) -> list[R]:
    return [future.result() for future in task.map(**_parameters(fixed, mapped))]


def _parameters(fixed: dict[str, Any], mapped: dict[str, Sequence[Any]]) -> dict[str, Any]:
    return {**{k: unmapped(v) for k, v in fixed.items()}, **mapped}
