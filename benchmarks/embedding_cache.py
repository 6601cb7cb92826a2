"""Embedding cache: the fusion stage with a warm cache vs the same stage recomputing embeddings.

Both sides call ``fusion_stage`` on the same trained home: embeddings for every image in
the fusion pairs, then the whole fusion experiment. With ``recompute_embeddings=True``
every embedding is computed again in memory (nothing written); otherwise they come from
the cache, filled once beforehand. The experiment itself costs the same on both sides,
so the stage ratio is bounded by how much of the stage embeddings are; the embedding
part alone is reported beside it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks.fixtures import BenchContext
from benchmarks.harness import BenchmarkResult, Budget, Side, Target, interleave, not_run

NAME = "embedding cache"
TARGET = Target("speedup", 20.0)


def run(ctx: BenchContext) -> BenchmarkResult:
    try:
        from benchmarks.fusion_stage import fusion_stage
        from retina_core.fusion.embed import embed_all
    except ImportError as exc:
        return not_run(NAME, f"{exc.name or 'retina_core.fusion'} missing")
    from retina_core import verbs

    settings = ctx.workspace_copy("embedding-cache")
    engine, store = verbs.catalog_engine(settings), verbs.curated_store(settings)
    started = time.perf_counter()
    filled = embed_all(settings, engine, store)
    fill_seconds = time.perf_counter() - started

    timings: dict[bool, list[Any]] = {True: [], False: []}

    def stage(recompute: bool) -> None:
        timings[recompute].append(fusion_stage(settings, engine, store, recompute_embeddings=recompute))

    budget = ctx.pick(Budget(3, 3, 0, warmup=1), Budget(1, 1, 0, warmup=1))
    baseline, ours = interleave(
        Side("fusion_stage recomputing every embedding (in memory, nothing written)", lambda _: stage(True)),
        Side("fusion_stage with embeddings from the warm cache", lambda _: stage(False)),
        budget,
    )
    last = timings[False][-1]
    timed = {k: v[budget.warmup :] for k, v in timings.items()}
    embed_recompute = statistics.median(t.embed_seconds for t in timed[True])
    embed_warm = statistics.median(t.embed_seconds for t in timed[False])
    fit = {k: statistics.median(t.fit_seconds for t in v) for k, v in timed.items()}
    # The ratio a cache costing nothing would reach: everything but the embeddings stays on both sides.
    rest_warm = statistics.median(t.seconds - t.embed_seconds for t in timed[False])
    ceiling = statistics.median(t.seconds for t in timed[True]) / max(rest_warm, 1e-9)
    return BenchmarkResult(
        name=NAME,
        baseline=baseline,
        ours=ours,
        target=TARGET,
        warmup=budget.warmup,
        figures={
            "cache_fill_seconds": fill_seconds,
            "cache_fill_computed": filled.computed,
            "pairs": last.pairs,
            "pairing": last.pairing,
            "images_embedded_per_recompute": timings[True][-1].computed,
            "warm_computed": [t.computed for t in timings[False]],
            "embed_seconds": {
                "recompute": [t.embed_seconds for t in timed[True]],
                "warm": [t.embed_seconds for t in timed[False]],
            },
            "experiment_seconds": {
                "recompute": [t.fit_seconds for t in timed[True]],
                "warm": [t.fit_seconds for t in timed[False]],
            },
            "embed_part_ratio": embed_recompute / max(embed_warm, 1e-9),
            "free_cache_bound": ceiling,
        },
        notes=[
            f"{ctx.workspace.images['fundus']} fundus + {ctx.workspace.images['oct']} OCT images, "
            f"{last.pairs} {last.pairing} pairs at "
            f"{settings.train.fundus.image_size} px; {timings[True][-1].computed} embeddings per recompute, "
            f"{last.computed} computed with the warm cache. Embedding part alone: "
            f"{embed_recompute:.2f} s vs {embed_warm:.3f} s ({embed_recompute / max(embed_warm, 1e-9):.0f}×); "
            f"the experiment (heads, bootstrap CIs) is the same work on both sides "
            f"(medians {fit[True]:.2f} s recomputing, {fit[False]:.2f} s warm), so even a cache that cost "
            f"nothing would give at most {ceiling:.1f}×. "
            f"Filling the cache once took {fill_seconds:.1f} s, in neither side.",
        ],
    )
