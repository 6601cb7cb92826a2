"""Fan a task out over chunks on the configured engine: Prefect's thread pool, or Dask.

``RETINA_ORCHESTRATION__TASK_RUNNER=dask`` sends the mapped chunks of ``ingest`` and
``embed`` to Dask workers through prefect-dask's ``DaskTaskRunner``: the scheduler at
``RETINA_ORCHESTRATION__DASK_ADDRESS`` when one is given, else a ``distributed.LocalCluster``
of ``dask_workers`` processes started for the run. The default runs them on a pool of
:data:`IN_FLIGHT` threads. The runner is chosen here, from the settings the flow
built inside the run, rather than on the ``@flow`` decorator, which is fixed at import.

Everything a mapped task receives (settings, chunk, plan) travels to the workers by
pickle, and results come back the same way: keep them plain data and object-store keys.
Dask workers build nothing from their own environment; they run the tasks with the
arguments they are given, so they need the project installed and reach the same catalog
and object store.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from prefect import Task, unmapped
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

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


IN_FLIGHT = 8
"""Threads of the thread runner, and chunks :meth:`ChunkMapper.stream` keeps submitted at once
on it (on Dask: twice its workers). Unbounded threads would let finished runs that are still
reporting their state pile up on a busy machine, each holding its chunk."""


class ChunkMapper:
    """Runs a task once per chunk on one task runner: all chunks at once (a call), or a
    bounded stream of them (:meth:`ChunkMapper.stream`) whose memory holds a window of
    chunks however many there are."""

    def __init__(self, runner: TaskRunner, window: int, *, in_process: bool) -> None:
        self.runner = runner
        self.window = window
        self.in_process = in_process

    def __call__(
        self, task: Task[..., R], fixed: dict[str, Any], mapped: dict[str, Sequence[Any]]
    ) -> list[R]:
        """``task`` once per position of the ``mapped`` lists (``fixed`` shared); results in order."""
        parameters = {**{k: unmapped(v) for k, v in fixed.items()}, **mapped}
        return [future.result() for future in self.runner.map(task, parameters)]

    def stream(self, task: Task[..., R], calls: Iterable[dict[str, Any]]) -> Iterator[R]:
        """``task`` once per parameter dict of ``calls``, read lazily; results in order.

        At most :attr:`window` runs are submitted and not yet collected: the next call is read
        (and submitted) only once the oldest result was taken. In process, parameters are quoted
        so that Prefect neither walks a chunk's items nor tracks them as upstream results (a
        quoted value does not survive the trip to a Dask worker, where it would stay wrapped).
        """
        pending: deque[PrefectFuture[R]] = deque()
        for call in calls:
            parameters = {k: quote(v) for k, v in call.items()} if self.in_process else call
            pending.append(self.runner.submit(task, parameters))
            if len(pending) >= self.window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@contextmanager
def chunk_mapper(orchestration: OrchestrationSettings) -> Iterator[ChunkMapper]:
    """A mapper over the configured runner, open for the block: one Dask cluster per flow run,
    however many fan-outs the flow makes (a local cluster takes seconds to start)."""
    if orchestration.task_runner == "thread":
        with ThreadPoolTaskRunner(max_workers=IN_FLIGHT) as threads:
            yield ChunkMapper(threads, IN_FLIGHT, in_process=True)
        return
    with dask_runner(orchestration) as runner:
        yield ChunkMapper(runner, max(IN_FLIGHT, 2 * orchestration.dask_workers), in_process=False)
