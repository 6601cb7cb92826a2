"""Ingestion: ``ingest`` of full-size photos vs the floor, a bare PIL decode loop over the same files.

Ingestion must read, hash, validate (which decodes) and store every file and register it
in the catalog; decoding alone is the least any ingestion can do, so its rate is the
floor ingestion is measured against. Each ingest repetition gets a fresh home whose
catalog is created and migrated before the clock starts (a one-time cost, not per image).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from benchmarks.fixtures import BenchContext, bench_settings
from benchmarks.harness import BenchmarkResult, Budget, Side, Target, interleave
from retina_core import verbs
from retina_core.config import Settings
from retina_core.domain import Source

NAME = "ingestion"
TARGET = Target("speedup", 0.7)


def decode_all(paths: list[Path]) -> int:
    """The floor: open and fully decode every file, nothing else."""
    for path in paths:
        with Image.open(path) as image:
            image.load()
    return len(paths)


def run(ctx: BenchContext) -> BenchmarkResult:
    landing = ctx.full_size
    paths = sorted((landing / "train_images").glob("*.png"))
    summaries: list[int] = []

    def setup() -> Settings:
        settings = bench_settings(ctx.new_dir("ingest-home"), image_size=128)
        verbs.catalog_engine(settings)  # create + migrate the catalog outside the clock
        return settings

    def ingest(settings: Settings) -> None:
        summaries.append(verbs.ingest(settings, Source.APTOS, str(landing)).accepted)

    def teardown(settings: Settings) -> None:
        shutil.rmtree(settings.home, ignore_errors=True)

    budget = ctx.pick(Budget(3, 5, 45, warmup=1), Budget(2, 3, 20, warmup=1))
    baseline, ours = interleave(
        Side(
            f"PIL open + load of {len(paths)} full-size PNGs, one thread",
            lambda _: decode_all(paths),
            images=len(paths),
        ),
        Side(
            "verbs.ingest (scan, read, SHA-256, validate, store, catalog) into a fresh home",
            ingest,
            setup=setup,
            teardown=teardown,
            images=len(paths),
        ),
        budget,
    )
    return BenchmarkResult(
        name=NAME,
        baseline=baseline,
        ours=ours,
        target=TARGET,
        warmup=budget.warmup,
        figures={"files": len(paths), "accepted_per_repetition": summaries},
        notes=[
            "Ratio = ingest images/s over the floor's. Ingest uses its own thread pool (4 threads), "
            "the floor one thread, as a plain decode loop would.",
        ],
    )
