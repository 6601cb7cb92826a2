"""Embedding accounting: only missing images are embedded, damage is recomputed, encoders are chosen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from retina_core import verbs
from retina_core.catalog.registry import promote
from retina_core.catalog.repository import image_records
from retina_core.data.synthetic import SynthSpec, write_synthetic
from retina_core.domain import Modality, Source
from retina_core.fusion.embed import (
    NoEncoder,
    compute_embeddings,
    embed_all,
    encoder_to_use,
    encoders_to_use,
    open_encoder,
)
from retina_core.fusion.embedding_cache import EmbeddingCache
from retina_core.models.persist import DamagedWeights
from retina_core.storage import LocalObjectStore
from tests.fusion.world import World, register_stand_in, world_settings
from tests.support.files import aptos_folder, image_bytes

SPEC = SynthSpec(fundus=24, oct=30, pairs=0, size=64, seed=3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, SPEC)
    return out


@pytest.fixture
def world(synth: Path, tmp_path: Path) -> World:
    settings = world_settings(tmp_path / "home")
    settings.embed.shard_size = 8
    engine, store = verbs.catalog_engine(settings), verbs.curated_store(settings)
    verbs.ingest(settings, Source.APTOS, str(synth / "aptos"))
    verbs.ingest(settings, Source.KERMANY, str(synth / "kermany"))
    w = World(settings, engine, store, None, synth)  # type: ignore[arg-type]
    for modality in Modality:
        register_stand_in(w, modality, seed=0)
    return w


def test_second_run_computes_nothing_and_new_images_cost_one_each(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = embed_all(world.settings, world.engine, world.store)
    assert (first.fundus.computed, first.oct.computed) == (SPEC.fundus, SPEC.oct)
    assert first.reused == 0

    def no_network(*_: object) -> None:
        raise AssertionError("a fully cached run built an encoder network")

    def no_weights(*_: object, **__: object) -> None:
        raise AssertionError("a fully cached run read the encoder weights")

    with monkeypatch.context() as m:  # all cached: the registry's weights hash is all it needs
        m.setattr("retina_core.fusion.embed.build_from_spec", no_network)
        m.setattr("retina_core.fusion.embed.read_weights", no_weights)
        second = embed_all(world.settings, world.engine, world.store)
    assert second.computed == 0 and second.reused == SPEC.fundus + SPEC.oct
    assert second.fundus.cache_key == first.fundus.cache_key

    k = 5
    names = [f"new{i}" for i in range(k)]
    more = aptos_folder(
        tmp_path / "more",
        [(n, str(i % 5)) for i, n in enumerate(names)],
        {n: image_bytes((80, 80), seed=100 + i) for i, n in enumerate(names)},
    )
    assert verbs.ingest(world.settings, Source.APTOS, str(more)).accepted == k
    third = embed_all(world.settings, world.engine, world.store)
    assert (third.fundus.computed, third.fundus.reused) == (k, SPEC.fundus)
    assert third.oct.computed == 0


def test_weights_changed_after_registration_are_refused_when_the_network_is_needed(
    world: World, tmp_path: Path
) -> None:
    embed_all(world.settings, world.engine, world.store)
    version = encoders_to_use(world.engine)[Modality.FUNDUS]
    assert isinstance(world.store, LocalObjectStore)
    weights = world.store.local_path(f"{version.object_prefix}/weights.safetensors")
    genuine = weights.read_bytes()
    weights.write_bytes(genuine[:-8] + bytes(8))  # same size, different bytes

    # Cached embeddings were made by the registered weights: still valid, nothing read.
    assert embed_all(world.settings, world.engine, world.store).computed == 0
    more = aptos_folder(tmp_path / "more", [("late", "2")], {"late": image_bytes((80, 80), seed=7)})
    assert verbs.ingest(world.settings, Source.APTOS, str(more)).accepted == 1
    with pytest.raises(DamagedWeights, match="changed after registration"):
        embed_all(world.settings, world.engine, world.store)  # one miss: the weights are needed

    weights.write_bytes(genuine)
    assert embed_all(world.settings, world.engine, world.store).fundus.computed == 1


def test_cached_embeddings_equal_a_fresh_computation(world: World) -> None:
    report = embed_all(world.settings, world.engine, world.store)
    encoder = open_encoder(world.store, encoders_to_use(world.engine)[Modality.OCT])
    cache = EmbeddingCache(world.store, world.engine, report.oct.cache_key)
    shas = [r.sha256 for r in image_records(world.engine, Modality.OCT)][:6]
    images = encoder.preprocessed.load_many(shas)
    fresh = compute_embeddings(encoder.model, images, torch.device("cpu"), batch_size=4)
    assert fresh.shape == (6, encoder.model.spec.embedding_dim) and fresh.dtype == np.float32
    np.testing.assert_allclose(cache.get(shas), fresh, rtol=1e-5, atol=1e-5)


def test_damaged_shard_is_detected_and_exactly_its_images_recomputed(world: World) -> None:
    first = embed_all(world.settings, world.engine, world.store)
    cache = EmbeddingCache(world.store, world.engine, first.oct.cache_key)
    victim = cache.shards()[1]
    assert isinstance(world.store, LocalObjectStore)
    path = world.store.local_path(victim.shard_key)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    again = embed_all(world.settings, world.engine, world.store)
    assert again.oct.evicted_shards == [victim.shard_key]
    assert (again.oct.computed, again.oct.reused) == (victim.n, SPEC.oct - victim.n)
    assert again.fundus.computed == 0
    assert cache.verify_and_evict_damaged() == []
    assert embed_all(world.settings, world.engine, world.store).computed == 0


def test_encoder_choice_champion_else_newest_and_a_new_encoder_is_a_new_cache(world: World) -> None:
    first = embed_all(world.settings, world.engine, world.store)
    newer = register_stand_in(world, Modality.FUNDUS, seed=1)
    assert encoder_to_use(world.engine, Modality.FUNDUS).version == newer.version  # no champion: newest
    switched = embed_all(world.settings, world.engine, world.store)
    assert switched.fundus.cache_key != first.fundus.cache_key
    assert (switched.fundus.computed, switched.oct.computed) == (SPEC.fundus, 0)

    promote(world.engine, "fundus_cnn", 1, actor="test", reason="pin the first encoder")
    assert encoder_to_use(world.engine, Modality.FUNDUS).version == 1  # a champion wins over newer
    back = embed_all(world.settings, world.engine, world.store)
    assert back.fundus.cache_key == first.fundus.cache_key and back.computed == 0


def test_no_registered_encoder_says_what_to_do(tmp_path: Path) -> None:
    settings = world_settings(tmp_path / "empty")
    with pytest.raises(NoEncoder, match="train fundus and oct first"):
        embed_all(settings, verbs.catalog_engine(settings), verbs.curated_store(settings))
