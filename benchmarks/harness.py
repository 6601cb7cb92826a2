"""Timing two sides of a claim fairly: interleaved repetitions, medians, a ratio against a target.

The machines these run on are shared, so load drifts over seconds. Running all of the
baseline and then all of ours would fold that drift into the ratio; alternating them
(A B A B …) exposes both sides to the same conditions. Per-repetition setup (a fresh
home, a cleared cache) is untimed and done the same way for both sides. Warm-up
repetitions, when a benchmark asks for them, are given to both sides equally and are
recorded, so nothing favours one side unseen.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

Status = Literal["ok", "not run", "error"]


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Side:
    """One side of a comparison: the work that is timed and the untimed setup around it."""

    label: str
    """What this side does, in a few words; printed in the notes under the table."""
    run: Callable[[Any], object]
    """The timed work; receives what ``setup`` returned."""
    setup: Callable[[], Any] = _nothing
    teardown: Callable[[Any], None] | None = None
    images: int | None = None
    """Images processed per repetition, so a rate can be shown beside the time."""


@dataclass(frozen=True)
class Budget:
    """How many repetitions, bounded by time so one slow benchmark cannot eat the run."""

    min_reps: int
    max_reps: int
    seconds: float
    """No new repetition starts once this much time is spent and ``min_reps`` are done."""
    warmup: int = 0
    """Untimed runs per side before timing, interleaved like the timed ones."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_reps <= self.max_reps:
            raise ValueError(f"need 1 <= min_reps <= max_reps, got {self.min_reps}, {self.max_reps}")


@dataclass
class Samples:
    """The timed repetitions of one side."""

    label: str
    seconds: list[float]
    images: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def work_per_second(self) -> float:
        """Images per second when the side counts images, else repetitions per second."""
        return (self.images or 1) / self.median

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "label": self.label,
            "seconds": self.seconds,
            "median_s": self.median,
            "images": self.images,
        }
        if self.images:
            data["images_per_s"] = self.work_per_second
        return data


@dataclass(frozen=True)
class Target:
    """What the issue asks of a ratio.

    ``speedup``: ours' rate over the baseline's (how many times faster ours is) must be at
    least ``bound``. ``cost``: ours' time over the baseline's must be at most ``bound``.
    """

    kind: Literal["speedup", "cost"]
    bound: float

    def ratio(self, baseline: Samples, ours: Samples) -> float:
        return self.ratio_of_rates(baseline.work_per_second, ours.work_per_second)

    def ratio_of_rates(self, baseline_rate: float, ours_rate: float) -> float:
        speedup = ours_rate / baseline_rate
        return speedup if self.kind == "speedup" else 1.0 / speedup

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.kind == "speedup" else ratio <= self.bound

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "bound": self.bound}


@dataclass
class BenchmarkResult:
    """One row of the table, with everything behind it for the JSON file."""

    name: str
    status: Status = "ok"
    baseline: Samples | None = None
    ours: Samples | None = None
    target: Target | None = None
    summary: str | None = None
    """The "ours" cell of a row without a baseline (inference, throughput)."""
    target_text: str | None = None
    """The "target" cell of a row without a ratio."""
    reason: str | None = None
    """Why a row was not run or failed."""
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    """Named extra figures: one-time costs, breakdowns, per-configuration numbers."""
    warmup: int = 0
    seconds: float = 0.0
    """Wall time the whole benchmark took, setup included."""

    @property
    def ratio(self) -> float | None:
        if self.status != "ok" or self.target is None or self.baseline is None or self.ours is None:
            return None
        return self.target.ratio(self.baseline, self.ours)

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        return None if ratio is None or self.target is None else self.target.met(ratio)

    @property
    def paired_ratios(self) -> list[float]:
        """The ratio of each interleaved pair: its spread shows how noisy the machine was."""
        if self.target is None or self.baseline is None or self.ours is None:
            return []
        b_work, o_work = self.baseline.images or 1, self.ours.images or 1
        pairs = zip(self.baseline.seconds, self.ours.seconds, strict=False)
        return [self.target.ratio_of_rates(b_work / b, o_work / o) for b, o in pairs]


def not_run(name: str, reason: str) -> BenchmarkResult:
    return BenchmarkResult(name=name, status="not run", reason=reason)


def failed(name: str, exc: BaseException) -> BenchmarkResult:
    return BenchmarkResult(name=name, status="error", reason=f"{type(exc).__name__}: {exc}")


def timed(side: Side) -> float:
    """Seconds of one ``side.run``, with its setup and teardown outside the clock."""
    state = side.setup()
    try:
        started = time.perf_counter()
        side.run(state)
        return time.perf_counter() - started
    finally:
        if side.teardown is not None:
            side.teardown(state)


def interleave(baseline: Side, ours: Side, budget: Budget) -> tuple[Samples, Samples]:
    """Time both sides in alternation, A B A B …, within the budget; warm-ups alternate too."""
    return _alternate([baseline, ours], budget)


def measure(side: Side, budget: Budget) -> Samples:
    """Repetitions of one side alone (rows with no baseline)."""
    return _alternate([side], budget)[0]


def _alternate(sides: list[Side], budget: Budget) -> list[Samples]:
    for _ in range(budget.warmup):
        for side in sides:
            timed(side)
    samples = [Samples(side.label, [], side.images) for side in sides]
    started = time.perf_counter()
    round_seconds: list[float] = []
    while len(round_seconds) < budget.max_reps:
        spent = time.perf_counter() - started
        if (
            len(round_seconds) >= budget.min_reps
            and spent + statistics.median(round_seconds) > budget.seconds
        ):
            break
        round_started = time.perf_counter()
        for side, sample in zip(sides, samples, strict=True):
            sample.seconds.append(timed(side))
        round_seconds.append(time.perf_counter() - round_started)
        log.info("repetition %d: %s", len(round_seconds), [f"{s.seconds[-1]:.3f}s" for s in samples])
    return samples
