"""The bench harness end to end on trivial benchmarks: interleaving, budgets, JSON and markdown.

Nothing here asserts a speed: the sides are trivial and the machine is shared. What is
checked is the machinery `make bench` relies on: the order sides run in, untimed setup,
what lands in ``latest.json`` and the shape of the printed table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchmarks
from benchmarks import harness
from benchmarks.fixtures import BenchContext
from benchmarks.harness import BenchmarkResult, Budget, Samples, Side, Target, interleave, not_run
from benchmarks.report import COLUMNS, markdown_table
from benchmarks.run import Benchmark, run_all, select


class FakeClock:
    """``time.perf_counter`` for the harness: moves only when a side says it spent time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


def test_sides_alternate_with_warmups_first_and_setup_outside_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(harness, "time", clock)
    calls: list[str] = []
    run_seconds = {"a": 2.0, "b": 0.5}

    def side(name: str) -> Side:
        def run(state: str) -> None:
            calls.append(f"{name}:{state}")
            clock.spend(run_seconds[name])

        def setup() -> str:
            calls.append(f"setup-{name}")
            clock.spend(100.0)  # untimed: must not reach the samples
            return name.upper()

        def teardown(state: str) -> None:
            calls.append(f"teardown-{state}")
            clock.spend(1000.0)  # untimed too

        return Side(name, run, setup=setup, teardown=teardown)

    baseline, ours = interleave(side("a"), side("b"), Budget(3, 3, 1e9, warmup=1))

    runs = [c for c in calls if ":" in c]
    assert runs == ["a:A", "b:B"] * 4  # one warm-up round, then three timed rounds, A B A B
    assert calls[:3] == ["setup-a", "a:A", "teardown-A"]
    # each sample is exactly its side's run, without its setup or teardown
    assert baseline.seconds == [2.0] * 3 and ours.seconds == [0.5] * 3


def test_budget_stops_after_min_reps_once_time_is_spent() -> None:
    baseline, ours = interleave(Side("a", lambda _: None), Side("b", lambda _: None), Budget(2, 50, 0.0))
    assert len(baseline.seconds) == len(ours.seconds) == 2
    with pytest.raises(ValueError):
        Budget(3, 2, 1.0)


def test_ratio_and_target_directions() -> None:
    slow = Samples("baseline", [2.0, 4.0, 3.0], images=30)
    fast = Samples("ours", [0.2, 0.4, 0.3], images=30)
    speedup = BenchmarkResult("s", baseline=slow, ours=fast, target=Target("speedup", 10.0))
    assert speedup.ratio == pytest.approx(10.0)
    assert speedup.met is True
    assert speedup.paired_ratios == pytest.approx([10.0, 10.0, 10.0])

    cost = BenchmarkResult("c", baseline=fast, ours=slow, target=Target("cost", 1.15))
    assert cost.ratio == pytest.approx(10.0)
    assert cost.met is False

    # rates, not times, when the two sides process different numbers of images
    rates = Target("speedup", 1.5).ratio(Samples("b", [1.0], images=10), Samples("o", [1.0], images=30))
    assert rates == pytest.approx(3.0)


def _trivial(ctx: BenchContext) -> BenchmarkResult:
    baseline, ours = interleave(
        Side("sum of 20k ints", lambda _: sum(range(20_000)), images=4),
        Side("sum of 2k ints", lambda _: sum(range(2_000)), images=4),
        ctx.pick(Budget(3, 5, 5), Budget(2, 2, 1)),
    )
    return BenchmarkResult(
        "trivial", baseline=baseline, ours=ours, target=Target("speedup", 1.0), notes=["n"]
    )


def _broken(ctx: BenchContext) -> BenchmarkResult:
    raise RuntimeError("boom")


def test_run_all_writes_json_and_a_table_row_per_benchmark(tmp_path: Path) -> None:
    benches = [
        Benchmark("trivial", "trivial", _trivial),
        Benchmark("absent", "absent", lambda ctx: not_run("absent", "retina_core.nothing missing")),
        Benchmark("broken", "broken", _broken),
    ]
    out = tmp_path / "results" / "latest.json"

    results, text = run_all(benches, quick=True, out=out, workdir=tmp_path)

    assert [r.status for r in results] == ["ok", "not run", "error"]
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["quick"] is True
    env = doc["environment"]
    assert env["cpu_count"] >= 1 and env["usable_cpus"] >= 1
    assert env["torch"] and env["device"]
    assert [b["name"] for b in doc["benchmarks"]] == ["trivial", "absent", "broken"]
    trivial, absent, broken = doc["benchmarks"]
    assert trivial["status"] == "ok"
    assert len(trivial["baseline"]["seconds"]) == len(trivial["ours"]["seconds"]) == 2
    assert (
        trivial["ours"]["median_s"]
        == sorted(trivial["ours"]["seconds"])[0]
        + (sorted(trivial["ours"]["seconds"])[1] - sorted(trivial["ours"]["seconds"])[0]) / 2
    )
    assert trivial["target"] == {"kind": "speedup", "bound": 1.0}
    # the row's figures follow from its own samples: ratio of medians, pairwise ratios, verdict
    base_s, ours_s = trivial["baseline"]["seconds"], trivial["ours"]["seconds"]
    assert trivial["ratio"] == pytest.approx(trivial["baseline"]["median_s"] / trivial["ours"]["median_s"])
    assert trivial["paired_ratios"] == pytest.approx([b / o for b, o in zip(base_s, ours_s, strict=True)])
    assert trivial["met"] is (trivial["ratio"] >= 1.0)
    assert absent["status"] == "not run" and absent["met"] is None
    assert broken["status"] == "error" and "boom" in broken["reason"]
    assert not list(tmp_path.glob("retina-bench-*")), "the run's temporary folder must be removed"

    lines = text.splitlines()
    header = "| " + " | ".join(COLUMNS) + " |"
    assert lines[0] == header == "| what | baseline | ours | ratio | target | met |"
    rows = lines[2:5]
    assert [r.split("|")[1].strip() for r in rows] == ["trivial", "absent", "broken"]
    assert all(r.count("|") == len(COLUMNS) + 1 for r in rows)
    assert rows[0].split("|")[5].strip() == "≥ 1×"
    assert rows[0].split("|")[6].strip() in {"yes", "no"}
    assert "not run: retina_core.nothing missing" in rows[1] and rows[1].endswith("| not run |")
    assert rows[2].endswith("| error |")
    assert "Notes" in text and "**trivial**: baseline = sum of 20k ints" in text


def test_table_escapes_pipes_and_shows_summary_rows() -> None:
    row = BenchmarkResult("info", summary="a | b", target_text="report (no target)")
    table = markdown_table([row]).splitlines()
    assert table[2] == "| info | — | a \\| b | — | report (no target) | — |"


def test_every_registered_benchmark_is_selectable() -> None:
    assert select(None) == [
        "preprocessing_cache",
        "input_pipeline",
        "embedding_cache",
        "incremental_retrain",
        "orchestration",
        "dispatch_latency",
        "ingestion",
        "dask_ingestion",
        "large_manifest",
        "inference",
        "serving",
        "training_throughput",
        "drift_check",
    ]
    folder = Path(benchmarks.__file__).parent
    assert all((folder / f"{key}.py").is_file() for key in select(None))
    assert select(["ingestion", "preprocessing_cache"]) == ["preprocessing_cache", "ingestion"]
    with pytest.raises(SystemExit):
        select(["nope"])
