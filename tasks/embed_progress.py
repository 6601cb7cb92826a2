"""Embedding progress of the flow's process: one tally per (flow run, modality).

Kept out of ``tasks/embed.py`` so the ``embed-shard`` task pickles for Dask: the task's
function is shipped by value, and a module-level lock among its globals would not pickle;
a module referenced by name does (its tallies stay in the process that planned them, which
is what the counts mean: on Dask workers :func:`shard_done` finds none and only emits).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from uuid import UUID

from prefect.artifacts import update_progress_artifact
from prefect.runtime import flow_run

from retina_core import progress
from retina_core.domain import Modality


@dataclass
class _Tally:
    """One modality's embedding progress in this flow run: the artifact and the images done."""

    artifact: UUID
    total: int
    done: int = 0


_tallies: dict[tuple[str, str], _Tally] = {}
_tallies_lock = threading.Lock()


def _tally_key(modality: Modality) -> tuple[str, str]:
    return str(flow_run.get_id()), Modality(modality).value


def open_tally(modality: Modality, artifact: UUID, total: int) -> None:
    with _tallies_lock:
        _tallies[_tally_key(modality)] = _Tally(artifact, total)


def shard_done(modality: Modality, count: int, total: int, seconds: float) -> None:
    stage = f"embed {modality}"
    progress.emit(progress.ShardDone(stage, items=count, total=total, seconds=seconds))
    with _tallies_lock:
        tally = _tallies.get(_tally_key(modality))
        if tally is None:  # a worker process that did not plan this modality
            return
        tally.done += count
        done, finished = tally.done, tally.done >= tally.total
    update_progress_artifact(tally.artifact, progress=100.0 * min(done, total) / max(total, 1))
    if finished:
        progress.emit(progress.StageFinished(stage))


def close_tallies() -> None:
    """Set this run's progress artifacts to 100% (shards counted on Dask workers never moved them)."""
    for modality in Modality:
        with _tallies_lock:
            tally = _tallies.pop(_tally_key(modality), None)
        if tally is not None:
            update_progress_artifact(tally.artifact, progress=100.0)
