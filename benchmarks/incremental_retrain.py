"""Incremental retrain: the embed stage after ~10% new images landed vs a cold embed stage.

Two snapshots of the same trained home, each with the same increment ingested on top:
one whose embedding cache was filled before the increment arrived, one with an empty
cache. Every repetition copies a snapshot to a fresh home (untimed) and times
``embed_all`` there, so both sides start from the same state each time.

The encoders are the same on both sides: the cache is keyed by encoder weights, so this
is the case of new data reaching fusion with unchanged encoders; a retrained encoder
has new weights, a new cache key, and embeds everything again.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.fixtures import BenchContext, copy_home, ingest_synthetic, with_home
from benchmarks.harness import BenchmarkResult, Budget, Side, Target, interleave, not_run
from retina_core.config import Settings

NAME = "incremental retrain"
TARGET = Target("cost", 0.15)


def run(ctx: BenchContext) -> BenchmarkResult:
    try:
        from retina_core.fusion.embed import embed_all
    except ImportError as exc:
        return not_run(NAME, f"{exc.name or 'retina_core.fusion'} missing")
    from retina_core import verbs

    ws = ctx.workspace
    started = time.perf_counter()
    cold = ctx.workspace_copy("incremental-cold")
    ingest_synthetic(cold, ws.increment)
    warm = ctx.workspace_copy("incremental-warm")
    before = embed_all(warm, verbs.catalog_engine(warm), verbs.curated_store(warm))
    ingest_synthetic(warm, ws.increment)
    snapshot_seconds = time.perf_counter() - started
    reports: dict[str, list[Any]] = {"cold": [], "warm": []}

    def side(kind: str, snapshot: Settings, label: str) -> Side:
        def setup() -> Settings:
            return with_home(snapshot, copy_home(snapshot.home, ctx.new_dir(f"incremental-{kind}") / "home"))

        def work(settings: Settings) -> None:
            reports[kind].append(
                embed_all(settings, verbs.catalog_engine(settings), verbs.curated_store(settings))
            )

        def teardown(settings: Settings) -> None:
            shutil.rmtree(Path(settings.home).parent, ignore_errors=True)

        return Side(label, work, setup=setup, teardown=teardown)

    budget = ctx.pick(Budget(3, 3, 0, warmup=1), Budget(1, 1, 0, warmup=1))
    baseline, ours = interleave(
        side("cold", cold, "embed_all with an empty embedding cache (every image computed)"),
        side(
            "warm", warm, "embed_all after the increment, cache filled before it (only new images computed)"
        ),
        budget,
    )
    c, w = reports["cold"][-1], reports["warm"][-1]
    return BenchmarkResult(
        name=NAME,
        baseline=baseline,
        ours=ours,
        target=TARGET,
        warmup=budget.warmup,
        figures={
            "images_before": ws.images,
            "computed": {"cold": c.computed, "incremental": w.computed},
            "reused": {"cold": c.reused, "incremental": w.reused},
            "increment_fraction": w.computed / max(c.computed, 1),
            "cache_filled_before_increment": before.computed,
            "snapshot_seconds": snapshot_seconds,
        },
        notes=[
            f"{c.computed} images embedded cold vs {w.computed} new ones incrementally "
            f"({w.computed / max(c.computed, 1):.0%} of the catalogue), encoders unchanged, "
            f"{ws.settings.train.fundus.image_size} px. Ratio = incremental time over cold time. "
            "Copying the snapshot into a fresh home is untimed on both sides.",
        ],
    )
