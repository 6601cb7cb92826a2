"""Progress of long work as small events: the library emits them, the entry point renders them.

The library never draws anything (no terminal, no Prefect). It reports what happened (a
stage started or finished, an epoch or a shard is done) to a :class:`Progress` sink, which
does nothing unless an entry point installed one: the ``retina`` command installs a
terminal display, the Prefect tasks add progress artifacts beside it.

Why a process-wide registry rather than one more argument: the stages run inside Prefect
tasks, and a sink handed down through flows would have to be a flow parameter, which must
stay something a person can type in the UI form. Like :mod:`logging`, the registry is
an observer the application sets once (:func:`installed`); the default sink does nothing,
so library code and tests that install none behave exactly as before. Where a loop already
takes a callback (the training loop's ``on_epoch``), the task that calls it turns the
callback into events beside its Prefect artifacts: one mechanism, not two. Flows run
in-process with the ``retina`` command (ephemeral API), so its sink sees every stage; a run
started on a worker has no sink and is seen through its artifacts instead.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class StageStarted:
    stage: str


@dataclass(frozen=True)
class StageFinished:
    stage: str
    failed: bool = False


@dataclass(frozen=True)
class EpochDone:
    """One training epoch: ``epoch`` counts from 1 to ``epochs`` (early stopping may end sooner)."""

    stage: str
    epoch: int
    epochs: int
    train_loss: float
    val_metric: float
    metric_name: str
    images_per_second: float
    seconds: float


@dataclass(frozen=True)
class ShardDone:
    """One shard of a mapped job (embedding, an ingestion chunk): ``items`` more of ``total`` are done.

    ``total`` None keeps the total announced earlier (a chunk does not know how many files the
    scan found); ``items`` 0 announces it. ``seconds`` is the shard's own time.
    """

    stage: str
    items: int
    total: int | None
    seconds: float
    unit: str = "images"


ProgressEvent = StageStarted | StageFinished | EpochDone | ShardDone


class Progress(Protocol):
    """Where progress events go. Implementations must be cheap and must not raise."""

    def emit(self, event: ProgressEvent) -> None: ...


class NoProgress:
    """The default: progress is not shown anywhere."""

    def emit(self, event: ProgressEvent) -> None:
        pass


NO_PROGRESS: Progress = NoProgress()


class Fanout:
    """Several sinks as one (e.g. a terminal display and a log of events)."""

    def __init__(self, *sinks: Progress) -> None:
        self.sinks = sinks

    def emit(self, event: ProgressEvent) -> None:
        for sink in self.sinks:
            sink.emit(event)


_lock = threading.Lock()
_installed: Progress = NO_PROGRESS


def current() -> Progress:
    """The sink the entry point installed, else :data:`NO_PROGRESS`."""
    return _installed


def emit(event: ProgressEvent) -> None:
    _installed.emit(event)


@contextmanager
def installed(sink: Progress) -> Iterator[Progress]:
    """Make ``sink`` the process's progress sink for the block, then put the previous one back."""
    global _installed
    with _lock:
        previous, _installed = _installed, sink
    try:
        yield sink
    finally:
        with _lock:
            _installed = previous


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Report the block as one stage: started, then finished (``failed`` when it raised)."""
    emit(StageStarted(name))
    try:
        yield
    except BaseException:
        emit(StageFinished(name, failed=True))
        raise
    emit(StageFinished(name))


def reports_stage(template: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a library verb so each call is reported as a stage named from its arguments.

    ``@reports_stage("explain {name}")`` names the stage after the call's ``name`` argument;
    one line above a verb, so the verb's body stays about its own work.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs)
            with stage(template.format_map(bound.arguments)):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
