"""Filling the embedding cache for the encoders fusion should use, computing only what is missing.

Which encoders: each modality's champion, or its newest version when none was promoted
yet (a first pipeline run must not stall waiting for a promotion). Their cache key is
derived from the weights, the preprocessing they were trained with and
:data:`EMBED_CODE_VERSION`, so a second run with the same encoders computes nothing and
new images cost exactly one embedding each.

The work is split as :func:`plan_embeddings` (what is missing) and :func:`embed_chunk`
(compute and store one shard's worth) so that Prefect can map the chunks over workers;
:func:`embed_modality` is the same thing in one process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from sqlalchemy import Engine

from retina_core.catalog.registry import ModelVersion, champion, get_version, list_versions
from retina_core.catalog.repository import image_records
from retina_core.config import Settings
from retina_core.data.image_cache import PreprocessedCache
from retina_core.domain import Modality
from retina_core.fusion.embedding_cache import DamagedShard, EmbeddingCache, encoder_cache_key
from retina_core.models.architectures import build_from_spec, model_for_modality
from retina_core.models.classifier import RetinaClassifier
from retina_core.models.device import select_device
from retina_core.models.inference import cache_for, infer_batches
from retina_core.models.persist import read_spec, read_weights
from retina_core.models.spec import ModelSpec
from retina_core.results import EmbedPlan, EmbedReport, EmbedStats
from retina_core.storage import ObjectStore

log = logging.getLogger(__name__)

EMBED_CODE_VERSION = "embed-v1"
"""Part of every cache key: bump when what an "embedding" means changes (layer, pooling, transform)."""


class NoEncoder(RuntimeError):
    """Fusion needs a registered encoder for each modality."""


@dataclass(frozen=True)
class Encoder:
    """A registered encoder opened for embedding: its spec, preprocessed cache and cache key.

    The network itself is built on first use: a run whose embeddings are all cached needs
    only the cache key, and building a timm model costs more than reading a warm shard.
    The key uses the weights' SHA-256 as the registry recorded it, so a warm run does not
    even read the weights; the first run that needs the network checks them against it.
    """

    version: ModelVersion
    spec: ModelSpec
    store: ObjectStore
    preprocessed: PreprocessedCache
    cache_key: str

    @cached_property
    def weights(self) -> dict[str, torch.Tensor]:
        return read_weights(self.store, self.version.object_prefix, sha256=self.version.weights_sha256)

    @property
    def modality(self) -> Modality:
        return self.spec.modality

    def images(self, keys: Mapping[str, str], shas: Sequence[str]) -> np.ndarray:
        """Model-input images of ``shas`` (object keys in ``keys``), preprocessing what the cache lacks."""
        todo = [(sha, lambda key=keys[sha]: self.store.get_bytes(key)) for sha in dict.fromkeys(shas)]
        self.preprocessed.ensure(todo, workers=2)
        return self.preprocessed.load_many(list(shas), workers=2)

    @cached_property
    def model(self) -> RetinaClassifier:
        model = build_from_spec(self.spec)
        model.load_state_dict(self.weights)
        return model.eval()


def encoder_to_use(engine: Engine, modality: Modality) -> ModelVersion:
    """The champion, else the newest version; :class:`NoEncoder` when none is registered."""
    name = model_for_modality(modality)
    current = champion(engine, name)
    if current is not None:
        return current
    versions = list_versions(engine, name)
    if not versions:
        raise NoEncoder(
            f"no {name} is registered: train fundus and oct first (retina train fundus; retina train oct)"
        )
    log.info("%s has no champion yet; using its newest version %d", name, versions[-1].version)
    return versions[-1]


def encoders_to_use(engine: Engine) -> dict[Modality, ModelVersion]:
    missing = [model_for_modality(m) for m in Modality if not list_versions(engine, model_for_modality(m))]
    if missing:
        raise NoEncoder(
            f"no {' or '.join(missing)} is registered: train fundus and oct first "
            "(retina train fundus; retina train oct)"
        )
    return {m: encoder_to_use(engine, m) for m in Modality}


def open_encoder(store: ObjectStore, version: ModelVersion) -> Encoder:
    """A registered encoder with the preprocessing it was trained on (from its spec); no weights read yet."""
    spec = read_spec(store, version.object_prefix)
    preprocessed = cache_for(store, spec)
    key = encoder_cache_key(version.weights_sha256, preprocessed.fingerprint, EMBED_CODE_VERSION)
    return Encoder(version=version, spec=spec, store=store, preprocessed=preprocessed, cache_key=key)


def catalogued_images(engine: Engine, encoder: Encoder, shas: Sequence[str]) -> np.ndarray:
    """:meth:`Encoder.images` for catalogued images: their object keys come from the catalog."""
    keys = {r.sha256: r.object_key for r in image_records(engine, encoder.modality, labeled_only=False)}
    return encoder.images(keys, shas)


def embedding_cache(settings: Settings, engine: Engine, store: ObjectStore, cache_key: str) -> EmbeddingCache:
    return EmbeddingCache(store, engine, cache_key, shard_size=settings.embed.shard_size)


def compute_embeddings(
    model: RetinaClassifier,
    images_uint8: np.ndarray,
    device: torch.device,
    batch_size: int = 64,
    amp: bool = True,
    *,
    num_workers: int | None = None,
) -> np.ndarray:
    """Pre-logit embeddings (N, D) float32 of preprocessed uint8 images, with the spec's eval transform."""
    dim = model.spec.embedding_dim
    if len(images_uint8) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return infer_batches(
        model, model.embed, images_uint8, device, dim, batch_size=batch_size, amp=amp, num_workers=num_workers
    )


def plan_embeddings(
    settings: Settings,
    engine: Engine,
    store: ObjectStore,
    modality: Modality,
    model_version: ModelVersion,
    *,
    encoder: Encoder | None = None,
) -> EmbedPlan:
    """Verify this encoder's shards (evicting damaged ones), then list the images still missing."""
    encoder = encoder or open_encoder(store, model_version)
    cache = embedding_cache(settings, engine, store, encoder.cache_key)
    evicted = cache.verify_and_evict_damaged()
    records = image_records(engine, Modality(modality), labeled_only=False)
    todo = set(cache.missing([r.sha256 for r in records]))
    return EmbedPlan(
        modality=modality,
        model_name=model_version.name,
        version=model_version.version,
        cache_key=encoder.cache_key,
        total=len(records),
        todo={r.sha256: r.object_key for r in records if r.sha256 in todo},
        evicted_shards=evicted,
    )


def embed_chunk(
    settings: Settings,
    engine: Engine,
    store: ObjectStore,
    plan: EmbedPlan,
    items: dict[str, str],
    *,
    encoder: Encoder | None = None,
) -> int:
    """Preprocess (through the shared cache), embed and store one chunk of images; returns how many."""
    if not items:
        return 0
    encoder = encoder or open_encoder(store, get_version(engine, plan.model_name, plan.version))
    if encoder.cache_key != plan.cache_key:
        raise ValueError(f"encoder cache key {encoder.cache_key} differs from the plan's {plan.cache_key}")
    shas = list(items)
    images = encoder.images(items, shas)
    embeddings = compute_embeddings(
        encoder.model,
        images,
        select_device(settings.train.device),
        settings.embed.batch_size,
        settings.train.amp,
        num_workers=settings.train.num_workers,
    )
    embedding_cache(settings, engine, store, plan.cache_key).put(shas, embeddings)
    return len(shas)


def embed_modality(
    settings: Settings, engine: Engine, store: ObjectStore, modality: Modality, model_version: ModelVersion
) -> EmbedStats:
    """Embed this modality's images that have no cached embedding for ``model_version``."""
    started = time.perf_counter()
    encoder = open_encoder(store, model_version)
    plan = plan_embeddings(settings, engine, store, modality, model_version, encoder=encoder)
    computed = sum(
        embed_chunk(settings, engine, store, plan, chunk, encoder=encoder)
        for chunk in plan.chunks(settings.embed.shard_size)
    )
    stats = stats_of(plan, computed, time.perf_counter() - started)
    log.info(
        "%s embeddings (cache %s): %d computed, %d reused", modality, plan.cache_key, computed, plan.reused
    )
    return stats


def stats_of(plan: EmbedPlan, computed: int, seconds: float = 0.0) -> EmbedStats:
    return EmbedStats(
        modality=plan.modality,
        model_name=plan.model_name,
        version=plan.version,
        cache_key=plan.cache_key,
        computed=computed,
        reused=plan.reused,
        evicted_shards=plan.evicted_shards,
        seconds=seconds,
    )


def embed_all(settings: Settings, engine: Engine, store: ObjectStore) -> EmbedReport:
    """Fill the cache for both modalities' encoders to use (:func:`encoders_to_use`)."""
    versions = encoders_to_use(engine)
    return EmbedReport(
        fundus=embed_modality(settings, engine, store, Modality.FUNDUS, versions[Modality.FUNDUS]),
        oct=embed_modality(settings, engine, store, Modality.OCT, versions[Modality.OCT]),
    )


def load_embeddings(
    settings: Settings,
    engine: Engine,
    store: ObjectStore,
    modality: Modality,
    model_version: ModelVersion,
    shas: list[str],
) -> tuple[np.ndarray, EmbedStats]:
    """Embeddings of exactly ``shas``, computing what is missing first.

    A shard found damaged while reading is evicted and recomputed once; damage found a
    second time is an error rather than a loop.
    """
    stats = embed_modality(settings, engine, store, modality, model_version)
    cache = embedding_cache(settings, engine, store, stats.cache_key)
    try:
        return cache.get(shas), stats
    except DamagedShard as exc:
        log.warning("%s; evicting and recomputing", exc)
        again = embed_modality(settings, engine, store, modality, model_version)
        merged = stats.model_copy(
            update={
                "computed": stats.computed + again.computed,
                "reused": max(0, stats.reused - again.computed),
                "evicted_shards": stats.evicted_shards + again.evicted_shards,
            }
        )
        return cache.get(shas), merged
