"""Large manifest: ingest of a 100,000-row pairs manifest, rows/s and peak RSS, both through
``verbs.ingest`` and through the ``ingest`` flow the ``retina ingest`` command runs (Prefect's
ephemeral API, started and warmed on a one-row manifest outside the clock).

Most rows name files that are missing or repeat a file already seen: the worst case for
bookkeeping (every row becomes a quarantine record or a duplicate), the best for showing
whether an ingest holds the whole manifest in memory. The ingest runs in a fresh interpreter
so that its peak resident memory is its own, not the harness's
(which holds torch).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.fixtures import BenchContext
from benchmarks.harness import BenchmarkResult

NAME = "large manifest"
ROWS = 100_000
QUICK_ROWS = 20_000
DISTINCT_FILES = 20
TARGET_ROWS_PER_S = 2_000
TARGET_PEAK_MB = 500


def write_manifest(root: Path, rows: int) -> Path:
    """``rows`` rows: half name missing files, half repeat one of a few real image pairs."""
    from tests.support.files import image_bytes, write

    for n in range(DISTINCT_FILES):
        write(root / "f" / f"{n}.png", image_bytes((64, 64), seed=n))
        write(root / "o" / f"{n}.jpeg", image_bytes((64, 64), mode="L", fmt="JPEG", seed=1000 + n))
    manifest = root / "pairs.csv"
    with manifest.open("w") as fh:
        fh.write("patient_id,eye,fundus_path,oct_path,dr_grade,oct_class\n")
        for i in range(rows):
            if i % 2:
                n = i % DISTINCT_FILES
                fh.write(f"P{i % DISTINCT_FILES},OD,f/{n}.png,o/{n}.jpeg,{n % 5},NORMAL\n")
            else:
                fh.write(f"Q{i},OS,f/missing-{i}.png,o/missing-{i}.jpeg,1,DME\n")
    return manifest


def peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM`` belongs to the address space exec
    made; ``ru_maxrss`` survives exec on Linux and would report the forking parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ingest_and_measure(home: Path, manifest: Path, via: str = "verbs") -> dict[str, float]:
    """Run in the child: ingest (``via`` verbs or flow), then report time, counts and this process's peak RSS."""
    from retina_core import verbs
    from retina_core.config import Settings, write_settings_file
    from retina_core.domain import Source

    settings = Settings(home=home, storage_url=None, database_url=None, s3_endpoint_url=None)
    verbs.catalog_engine(settings)  # create + migrate the catalog outside the clock
    if via == "flow":
        from flows.runtime import fast_flows, prefect_environment

        prefect_environment(home)
        from flows.ingest import IngestParams, ingest_flow

        config = str(write_settings_file(settings, home / "settings.yaml"))
        one = home / "one.csv"
        one.write_text("patient_id,eye,fundus_path,oct_path,dr_grade,oct_class\nP,OD,f,o,1,DME\n")
        with fast_flows():
            ingest_flow(IngestParams(source=Source.PAIRS, location=str(one), emit=False, config_file=config))
            started = time.perf_counter()
            summary = ingest_flow(
                IngestParams(source=Source.PAIRS, location=str(manifest), emit=False, config_file=config)
            )
    else:
        started = time.perf_counter()
        summary = verbs.ingest(settings, Source.PAIRS, str(manifest))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "scanned": summary.scanned,
        "quarantined": len(summary.quarantined),
        "duplicates": summary.duplicates,
        "accepted": summary.accepted,
    }


def measure_ingest(home: Path, manifest: Path, via: str = "verbs") -> dict[str, float]:
    """The ingest in a fresh interpreter (``python -m benchmarks.large_manifest``): its peak
    RSS is the ingest's own, not that of a parent holding torch and the other rows' data."""
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.large_manifest", str(home), str(manifest), via],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the ingest process failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(ctx: BenchContext) -> BenchmarkResult:
    rows = ctx.pick(ROWS, QUICK_ROWS)
    manifest = write_manifest(ctx.new_dir("large-manifest"), rows)
    figures = measure_ingest(ctx.new_dir("large-manifest-home"), manifest)
    flow = measure_ingest(ctx.new_dir("large-manifest-flow-home"), manifest, via="flow")
    rate, flow_rate = rows / figures["seconds"], rows / flow["seconds"]
    met = all(
        r >= TARGET_ROWS_PER_S and f["peak_rss_mb"] < TARGET_PEAK_MB
        for r, f in ((rate, figures), (flow_rate, flow))
    )
    summary = (
        f"verbs {rate:,.0f} rows/s, peak RSS {figures['peak_rss_mb']:,.0f} MB; "
        f"flow {flow_rate:,.0f} rows/s, peak RSS {flow['peak_rss_mb']:,.0f} MB "
        f"({rows:,} rows) {'met' if met else 'MISSED'}"
    )
    return BenchmarkResult(
        name=NAME,
        summary=summary,
        target_text=f">= {TARGET_ROWS_PER_S:,} rows/s and < {TARGET_PEAK_MB} MB peak RSS",
        figures={
            "rows": rows,
            "rows_per_s": rate,
            **figures,
            "flow_rows_per_s": flow_rate,
            **{f"flow_{k}": v for k, v in flow.items()},
        },
        notes=[
            "Large manifest: a pairs manifest whose rows mostly name missing files or repeat a few "
            "real ones; verbs.ingest, then the ingest flow (default chunk size), each in a fresh interpreter; "
            "peak RSS is its VmHWM (ru_maxrss would carry the parent's).",
        ],
    )


if __name__ == "__main__":
    print(json.dumps(ingest_and_measure(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:])))
