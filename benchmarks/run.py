"""`make bench`: run every benchmark, write ``benchmarks/results/latest.json``, print the table.

    python -m benchmarks.run [--quick] [--only NAME ...] [--out PATH] [--threads N]

The table goes to stdout, progress to stderr. The exit status is 1 when a benchmark
failed with an error; a missed target is a result, not a failure, and exits 0.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.fixtures import BenchContext
from benchmarks.harness import BenchmarkResult, failed
from benchmarks.report import environment, render, run_document, usable_cpus, write_json
from retina_cli.display import showing_progress
from retina_core import progress

log = logging.getLogger("benchmarks")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass(frozen=True)
class Benchmark:
    key: str
    """Module name, for ``--only``."""
    name: str
    """Row label in the table."""
    run: Callable[[BenchContext], BenchmarkResult]


BENCHMARKS = (
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
)
"""Modules under ``benchmarks/``, in table order; each has ``NAME`` and ``run(ctx)``."""


def load(key: str) -> Benchmark:
    """Import one benchmark module (they pull in torch and the whole library, so only on demand)."""
    module = importlib.import_module(f"benchmarks.{key}")
    return Benchmark(key, module.NAME, module.run)


def run_benchmark(bench: Benchmark, ctx: BenchContext) -> BenchmarkResult:
    """One benchmark; an exception becomes an "error" row instead of ending the run."""
    started = time.perf_counter()
    try:
        with progress.stage(f"bench {bench.name}"):
            result = bench.run(ctx)
    except Exception as exc:  # every other row is still worth having
        log.exception("%s failed", bench.name)
        result = failed(bench.name, exc)
    result.seconds = time.perf_counter() - started
    log.info("%s: %s in %.0f s", bench.name, result.status, result.seconds)
    return result


def run_all(
    benchmarks: Sequence[Benchmark], *, quick: bool, out: Path, workdir: Path | None = None
) -> tuple[list[BenchmarkResult], str]:
    """Run the benchmarks in order in one temporary folder; write the JSON; return the markdown."""
    started_at, started = datetime.now(UTC), time.perf_counter()
    env = environment()
    with tempfile.TemporaryDirectory(prefix="retina-bench-", dir=workdir) as tmp:
        ctx = BenchContext(Path(tmp), quick=quick)
        results = [run_benchmark(b, ctx) for b in benchmarks]
    seconds = time.perf_counter() - started
    write_json(run_document(results, env, quick=quick, started=started_at, seconds=seconds), out)
    return results, render(results, env, quick=quick) + f"\nTotal {seconds:.0f} s. Raw data: {out}\n"


def select(keys: Sequence[str] | None) -> list[str]:
    """The benchmarks to run, in table order; all of them when ``keys`` is empty."""
    if not keys:
        return list(BENCHMARKS)
    unknown = [k for k in keys if k not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    return [k for k in BENCHMARKS if k in keys]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smaller data, fewer repetitions (≤ 3 minutes).")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="Run only these (module names).")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file to write (default {RESULTS}).")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: the usable CPUs)."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)

    import torch

    torch.set_num_threads(args.threads or usable_cpus())
    # The rows' progress only: the library's own stages inside a measurement would bury it.
    with showing_progress(keep=lambda stage: stage.startswith("bench ")):
        results, text = run_all([load(k) for k in select(args.only)], quick=args.quick, out=args.out)
    sys.stdout.write(text)
    return 1 if any(r.status == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
