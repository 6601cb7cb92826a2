"""The terminal side of progress: what the ``retina`` command shows on stderr while it works.

The library reports events (:mod:`retina_core.progress`); this module draws them. In a
terminal one live rich display holds a row per stage (the running one spinning), with the
epoch, train loss, validation metric, images per second and an ETA; anywhere else (a CI
log, ``make demo > log``) it writes one plain line per stage and per epoch. Both write to
stderr only: stdout belongs to the command's result (one JSON object under ``--json``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from retina_core import progress
from retina_core.progress import EpochDone, ProgressEvent, ShardDone, StageFinished, StageStarted


def clock(seconds: float) -> str:
    """``1:02:03`` / ``2:03``: an ETA as people read one."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class StageState:
    """What is known of one stage: when it started, and its epochs or items so far."""

    name: str
    started: float
    done: int = 0
    total: int | None = None
    busy_seconds: float = 0.0
    timed: int = 0  # epochs or items that busy_seconds covers (a resumed run starts past epoch 1)
    finished: bool = False

    def eta(self, *, wall_clock: bool = False) -> float | None:
        """Remaining time at the pace so far, None before the first step.

        Epochs run one after another, so their own seconds set the pace (the preprocessing
        before epoch 1 does not count); shards run side by side, so the wall clock does.
        """
        if not self.total or not self.timed or self.done >= self.total:
            return None
        spent = time.monotonic() - self.started if wall_clock else self.busy_seconds
        return spent / self.timed * (self.total - self.done)

    def crossed_tenth(self, items: int) -> bool:
        """Whether the last ``items`` took the stage past another tenth of its total, or to its end."""
        if not self.total:
            return False
        return (
            self.done >= self.total or 10 * self.done // self.total > 10 * (self.done - items) // self.total
        )


def epoch_text(event: EpochDone, eta: float | None) -> str:
    text = (
        f"epoch {event.epoch}/{event.epochs}: train loss {event.train_loss:.3f}, "
        f"val {event.metric_name} {event.val_metric:.3f}, {event.images_per_second:.0f} img/s"
    )
    return text + (f", ETA {clock(eta)}" if eta is not None else "")


def epoch_info(event: EpochDone, eta: float | None) -> str:
    """The live row's shorter twin of :func:`epoch_text` (the bar already says which epoch)."""
    text = (
        f"loss {event.train_loss:.3f} · {event.metric_name} {event.val_metric:.3f} · "
        f"{event.images_per_second:.0f} img/s"
    )
    return text + (f" · ETA {clock(eta)}" if eta is not None else "")


def _rate(state: StageState) -> float:
    """Items per second since the stage started (shards run side by side)."""
    seconds = time.monotonic() - state.started
    return state.done / seconds if seconds > 0 else 0.0


def shard_info(state: StageState, unit: str, eta: float | None) -> str:
    short = {"images": "img", "files": "files"}.get(unit, unit)
    return f"{_rate(state):.0f} {short}/s" + (f" · ETA {clock(eta)}" if eta is not None else "")


def shard_text(state: StageState, unit: str, eta: float | None) -> str:
    text = f"{state.done}/{state.total} {unit}, {_rate(state):.0f} {unit}/s"
    return text + (f", ETA {clock(eta)}" if eta is not None else "")


class Tracker:
    """Stage bookkeeping shared by both renderers; thread-safe (mapped tasks report from threads)."""

    def __init__(self) -> None:
        self.stages: dict[str, StageState] = {}
        self.lock = threading.Lock()

    def start(self, name: str) -> StageState:
        state = StageState(name, time.monotonic())
        self.stages[name] = state
        return state

    def get(self, name: str) -> StageState:
        return self.stages.get(name) or self.start(name)

    def epoch(self, event: EpochDone) -> StageState:
        state = self.get(event.stage)
        state.done, state.total = event.epoch, event.epochs
        state.busy_seconds += event.seconds
        state.timed += 1
        return state

    def shard(self, event: ShardDone) -> StageState:
        state = self.get(event.stage)
        state.done += event.items
        state.total = event.total if event.total is not None else state.total
        state.busy_seconds += event.seconds
        state.timed += event.items
        return state

    def finish(self, name: str) -> StageState:
        state = self.get(name)
        state.finished = True
        return state


class PlainLines:
    """One line per stage start and end, per epoch and per shard: readable in any log."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tracker = Tracker()

    def _line(self, text: str) -> None:
        self.stream.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
        self.stream.flush()

    def emit(self, event: ProgressEvent) -> None:
        with self.tracker.lock:
            if isinstance(event, StageStarted):
                self.tracker.start(event.stage)
                self._line(f"{event.stage}: started")
            elif isinstance(event, StageFinished):
                state = self.tracker.finish(event.stage)
                verb = "failed" if event.failed else "done"
                self._line(f"{event.stage}: {verb} in {clock(time.monotonic() - state.started)}")
            elif isinstance(event, EpochDone):
                state = self.tracker.epoch(event)
                self._line(f"{event.stage}: {epoch_text(event, state.eta())}")
            elif isinstance(event, ShardDone):
                state = self.tracker.shard(event)
                if not event.items:
                    self._line(f"{event.stage}: {state.total} {event.unit} to process")
                elif state.crossed_tenth(event.items):  # ten lines at most, whatever the shard count
                    self._line(f"{event.stage}: {shard_text(state, event.unit, state.eta(wall_clock=True))}")

    def close(self) -> None:
        pass


class LiveDisplay:
    """A rich live display on stderr: one row per stage, updated in place."""

    def __init__(self, console: Console) -> None:
        self.tracker = Tracker()
        self.rows: dict[str, TaskID] = {}
        self.bars = RichProgress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[count]:>9}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            redirect_stdout=False,  # stdout is the command's result, never the display's
            redirect_stderr=True,  # stray warnings print above the display instead of through it
        )

    def start(self) -> None:
        self.bars.start()

    def close(self) -> None:
        with self.tracker.lock:
            for name, row in self.rows.items():
                if not self.tracker.stages[name].finished:
                    self.bars.update(row, info="[yellow]stopped")
        self.bars.stop()

    def _row(self, name: str) -> TaskID:
        if name not in self.rows:
            self.rows[name] = self.bars.add_task(name, total=None, info="", count="")
        return self.rows[name]

    def emit(self, event: ProgressEvent) -> None:
        with self.tracker.lock:
            row = self._row(event.stage)
            if isinstance(event, StageStarted):
                self.tracker.start(event.stage)
                self.bars.reset(row, total=None, info="", count="")
            elif isinstance(event, StageFinished):
                state = self.tracker.finish(event.stage)
                info = "[red]failed" if event.failed else self._info(row)
                # Finished means a full bar and a tick; early stopping's undone epochs stay in the count.
                self.bars.update(row, total=max(state.done, 1), completed=max(state.done, 1), info=info)
                self.bars.stop_task(row)
            elif isinstance(event, EpochDone):
                state = self.tracker.epoch(event)
                self.bars.update(
                    row,
                    total=state.total,
                    completed=state.done,
                    count=f"{state.done}/{state.total}",
                    info=epoch_info(event, state.eta()),
                )
            elif isinstance(event, ShardDone):
                state = self.tracker.shard(event)
                self.bars.update(
                    row,
                    total=state.total,
                    completed=state.done,
                    count=f"{state.done}/{state.total}",
                    info=shard_info(state, event.unit, state.eta(wall_clock=True)) if event.items else "",
                )

    def _info(self, row: TaskID) -> str:  # the last info without its ETA, once the stage is over
        task = next(t for t in self.bars.tasks if t.id == row)
        text = str(task.fields.get("info", ""))
        return text.split(" · ETA")[0]


class OnlyStages:
    """Pass on the events of the stages ``keep`` accepts (``make bench`` shows its rows, not the
    library's stages inside each measurement)."""

    def __init__(self, sink: progress.Progress, keep: Callable[[str], bool]) -> None:
        self.sink, self.keep = sink, keep

    def emit(self, event: ProgressEvent) -> None:
        if self.keep(event.stage):
            self.sink.emit(event)


@contextmanager
def _logging_to(stream: TextIO) -> Iterator[None]:
    """Point stderr log handlers at ``stream`` (the live display's proxy) for the block.

    A handler keeps the stream it was created with, so without this a log line would be
    written straight through the live display instead of above it.
    """
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {
        h
        for logger in loggers
        if isinstance(logger, logging.Logger)  # the dict also holds placeholders
        for h in logger.handlers
        if isinstance(h, logging.StreamHandler) and h.stream is sys.__stderr__
    }
    for handler in handlers:
        handler.setStream(stream)
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(sys.__stderr__)


@contextmanager
def showing_progress(
    stream: TextIO | None = None, *, keep: Callable[[str], bool] | None = None
) -> Iterator[progress.Progress]:
    """Install the terminal progress display for the block: live in a terminal, plain lines elsewhere.

    ``keep`` limits the display to the stages it accepts; every stage is shown by default.
    """
    stream = stream or sys.stderr
    console = Console(file=stream)
    if console.is_terminal and not console.is_dumb_terminal:
        display = LiveDisplay(console)
        display.start()
        try:
            with _logging_to(sys.stderr), progress.installed(_kept(display, keep)):
                yield display
        finally:
            display.close()
        return
    plain = PlainLines(stream)
    with progress.installed(_kept(plain, keep)):
        yield plain


def _kept(sink: progress.Progress, keep: Callable[[str], bool] | None) -> progress.Progress:
    return sink if keep is None else OnlyStages(sink, keep)
