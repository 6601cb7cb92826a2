"""Ingestion fan-out: the ``ingest`` flow on a 2-process Dask LocalCluster vs Prefect's thread runner.

The same folder of full-size photos is ingested into a fresh home by the real ``ingest``
flow (ephemeral API, heartbeat off) twice per repetition: with the default thread runner
(the chunks share one Python process and its GIL) and with
``orchestration.task_runner = dask`` pointed at a running 2-process cluster, the way a
deployment uses an existing scheduler (``dask_address``). The cluster is started once
before the clock (its start-up is reported as a separate figure) and warmed by the untimed
first repetition; a run with no address starts its own LocalCluster and pays that start-up
on every run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from benchmarks.fixtures import BenchContext, bench_settings
from benchmarks.harness import BenchmarkResult, Budget, Side, Target, interleave
from retina_core import verbs
from retina_core.config import write_settings_file
from retina_core.domain import Source

NAME = "ingestion on Dask (2 processes) vs threads"
TARGET = Target("speedup", 1.4)
CHUNK = 12
"""Files per mapped task: four chunks for the two workers, as a deployment sizes chunks to its workers."""


def run(ctx: BenchContext) -> BenchmarkResult:
    from flows.runtime import prefect_environment

    landing = ctx.full_size
    files = len(list((landing / "train_images").glob("*.png")))
    prefect_environment(ctx.new_dir("prefect"))
    from distributed import LocalCluster

    from flows.ingest import IngestParams, ingest_flow
    from flows.runtime import fast_flows

    accepted: dict[str, list[int]] = {"thread": [], "dask": []}
    started = time.perf_counter()
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    cluster_start = time.perf_counter() - started

    def side(runner: str, label: str) -> Side:
        def setup() -> Path:
            settings = bench_settings(ctx.new_dir(f"{runner}-home"), image_size=128)
            settings.orchestration.task_runner = runner  # type: ignore[assignment]
            settings.orchestration.dask_address = cluster.scheduler_address
            verbs.catalog_engine(settings)  # create + migrate the catalog outside the clock
            return write_settings_file(settings, settings.home / "settings.yaml")

        def ingest(config: Path) -> None:
            params = IngestParams(
                source=Source.APTOS,
                location=str(landing),
                chunk_size=CHUNK,
                emit=False,
                config_file=str(config),
            )
            with fast_flows():
                accepted[runner].append(ingest_flow(params).accepted)

        return Side(label, ingest, setup=setup, teardown=lambda c: shutil.rmtree(c.parent), images=files)

    budget = ctx.pick(Budget(3, 5, 120, warmup=1), Budget(2, 3, 60, warmup=1))
    try:
        baseline, ours = interleave(
            side(
                "thread", f"ingest flow, Prefect thread runner, {files} full-size PNGs in chunks of {CHUNK}"
            ),
            side("dask", "ingest flow, DaskTaskRunner on a running Dask cluster of 2 worker processes"),
            budget,
        )
    finally:
        cluster.close()
    return BenchmarkResult(
        name=NAME,
        baseline=baseline,
        ours=ours,
        target=TARGET,
        warmup=budget.warmup,
        figures={
            "files": files,
            "accepted": accepted,
            "local_cluster_start_seconds": round(cluster_start, 2),
        },
        notes=[
            "Ratio = images/s on Dask over images/s on threads, against a cluster already running "
            f"(its start-up, {cluster_start:.1f} s here, is paid once per cluster, or per run when no "
            "dask_address is set).",
        ],
    )
