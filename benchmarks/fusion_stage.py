"""The fusion stage without the registry, timed: what ``make bench``'s embedding-cache row compares.

:func:`fusion_stage` gathers the inputs (embeddings from the cache, or all recomputed in
memory) and runs the whole fusion experiment, recording how the time splits. Only the
benchmark needs it, so it lives here rather than in the library.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, Field
from sqlalchemy import Engine

from retina_core.config import Settings
from retina_core.fusion.experiment import run_experiment
from retina_core.fusion.train import gather_inputs
from retina_core.results import PairingUsed
from retina_core.storage import ObjectStore


class FusionStageTiming(BaseModel):
    """What ``make bench`` records for the fusion stage."""

    recompute_embeddings: bool
    images: int
    embed_seconds: float
    fit_seconds: float
    seconds: float
    computed: int = Field(
        description="Embeddings computed (cache: new catalog images; recompute: every image)."
    )
    reused: int = Field(description="Embeddings read from the cache (the whole catalog's, when warm).")
    pairs: int
    pairing: PairingUsed
    fusion_auc: float


def fusion_stage(
    settings: Settings, engine: Engine, store: ObjectStore, *, recompute_embeddings: bool
) -> FusionStageTiming:
    """The fusion stage without the registry: embeddings, pairs, the full experiment.

    With ``recompute_embeddings=False`` embeddings come from the cache (computing only what
    is missing); with ``True`` every embedding is computed again in memory and nothing is
    written, so the two timings differ exactly by the cache.
    """
    started = time.perf_counter()
    inputs = gather_inputs(settings, engine, store, recompute_embeddings=recompute_embeddings)
    fit_started = time.perf_counter()
    ev, _ = run_experiment(
        settings.fusion, settings.evaluation, inputs.arrays, inputs.control, inputs.pairing, inputs.counts()
    )
    done = time.perf_counter()
    return FusionStageTiming(
        recompute_embeddings=recompute_embeddings,
        images=inputs.images,
        embed_seconds=inputs.embed_seconds,
        fit_seconds=done - fit_started,
        seconds=done - started,
        computed=inputs.embed.computed,
        reused=inputs.embed.reused,
        pairs=len(inputs.pairs),
        pairing=inputs.pairing,
        fusion_auc=ev.row("fusion").result.auc.value,
    )
