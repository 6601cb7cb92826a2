"""The embedding cache: shards in the store, an index in the catalog, damage never served."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as st_save
from sqlalchemy import Engine, inspect, select, update

from retina_core.catalog.db import head_revision, make_engine, migrate, session_scope
from retina_core.catalog.models import EmbeddingShardFileRow, EmbeddingShardRow
from retina_core.fusion.embedding_cache import (
    DamagedShard,
    EmbeddingCache,
    MissingEmbeddings,
    encoder_cache_key,
)
from retina_core.storage import LocalObjectStore, ObjectStore

KEY = encoder_cache_key("weights", "preprocess", "embed-v1")


def shas(n: int, start: int = 0) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, start + n)]


def vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    migrate(engine)
    return engine


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


def filled(
    store: ObjectStore, engine: Engine, n: int = 10, shard_size: int = 4
) -> tuple[EmbeddingCache, list[str], np.ndarray]:
    cache = EmbeddingCache(store, engine, KEY, shard_size=shard_size)
    ids, emb = shas(n), vectors(n)
    cache.put(ids, emb)
    return cache, ids, emb


def test_cache_key_is_32_hex_and_depends_on_every_input() -> None:
    assert len(KEY) == 32 and int(KEY, 16) >= 0
    assert encoder_cache_key("weights", "preprocess", "embed-v1") == KEY
    others = {
        encoder_cache_key("weights2", "preprocess", "embed-v1"),
        encoder_cache_key("weights", "preprocess2", "embed-v1"),
        encoder_cache_key("weights", "preprocess", "embed-v2"),
    }
    assert KEY not in others and len(others) == 3


def test_migration_0003_adds_the_shard_table(engine: Engine) -> None:
    assert head_revision() >= "0003"  # later migrations (0004: DICOM volumes) keep the table
    columns = {c["name"] for c in inspect(engine).get_columns("embedding_shards")}
    assert columns == {"shard_key", "cache_key", "n", "dim", "sha256", "created_at"}


def test_put_get_round_trip_in_shards_on_both_stores(object_store: ObjectStore, engine: Engine) -> None:
    cache, ids, emb = filled(object_store, engine, n=10, shard_size=4)
    keys = [info.key for info in object_store.list(f"embeddings/{KEY}/")]
    assert len(keys) == 3 and all(k.endswith(".safetensors") for k in keys)
    assert sorted(s.n for s in cache.shards()) == [2, 4, 4]
    order = [7, 0, 3, 9, 3]
    np.testing.assert_array_equal(cache.get([ids[i] for i in order]), emb[order])
    assert cache.missing([*ids[:3], *shas(2, start=100), ids[0]]) == shas(2, start=100)
    assert cache.count() == 10


def test_putting_known_images_again_adds_no_entries(store: LocalObjectStore, engine: Engine) -> None:
    cache, ids, emb = filled(store, engine)
    cache.put(ids[:4], emb[:4])  # identical bytes: same content-addressed shard, a no-op
    cache.put(ids[4:6], emb[4:6] + 1)  # different values for known images: the first entry wins
    assert cache.count() == 10
    np.testing.assert_array_equal(cache.get(ids), emb)


def test_concurrent_writers_index_each_image_once(store: LocalObjectStore, engine: Engine) -> None:
    ids, emb = shas(40), vectors(40)
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        try:
            noise = np.random.default_rng(seed).normal(scale=1e-6, size=emb.shape).astype(np.float32)
            EmbeddingCache(store, engine, KEY, shard_size=8).put(ids, emb + noise)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cache = EmbeddingCache(store, engine, KEY)
    assert cache.count() == 40 and cache.missing(ids) == []
    np.testing.assert_allclose(cache.get(ids), emb, atol=1e-4)


def test_unknown_images_raise_missing(store: LocalObjectStore, engine: Engine) -> None:
    cache, ids, _ = filled(store, engine)
    with pytest.raises(MissingEmbeddings) as info:
        cache.get([ids[0], *shas(1, start=50)])
    assert info.value.shas == shas(1, start=50)


def test_refuses_nan_wrong_width_and_bad_ids(store: LocalObjectStore, engine: Engine) -> None:
    cache, _, _ = filled(store, engine)
    bad = vectors(2)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cache.put(shas(2, start=20), bad)
    with pytest.raises(ValueError, match="one cache key is one encoder"):
        cache.put(shas(2, start=20), vectors(2, dim=5))
    with pytest.raises(ValueError, match="SHA-256"):
        cache.put(["not-a-sha", shas(1, start=30)[0]], vectors(2))
    with pytest.raises(ValueError, match="shape"):
        cache.put(shas(3, start=20), vectors(2))
    assert cache.count() == 10


def _shard_of(cache: EmbeddingCache, sha: str) -> str:
    with session_scope(cache.engine) as session:
        return session.execute(
            select(EmbeddingShardRow.shard_key).where(
                EmbeddingShardRow.cache_key == cache.cache_key, EmbeddingShardRow.sha256 == sha
            )
        ).scalar_one()


def _truncate(store: LocalObjectStore, engine: Engine, key: str) -> None:
    path = store.local_path(key)
    path.write_bytes(path.read_bytes()[:50])


def _flip_bytes(store: LocalObjectStore, engine: Engine, key: str) -> None:
    path = store.local_path(key)
    data = bytearray(path.read_bytes())
    data[-5:] = bytes(b ^ 0xFF for b in data[-5:])
    path.write_bytes(bytes(data))


def _wrong_shape_with_matching_checksum(store: LocalObjectStore, engine: Engine, key: str) -> None:
    """A writer bug, not bit rot: valid safetensors of another shape, and an index checksum that agrees."""
    data = st_save({"embeddings": vectors(3, dim=7)}, metadata={"shas": "[]", "dim": "7"})
    store.local_path(key).write_bytes(data)
    with session_scope(engine) as session:
        session.execute(
            update(EmbeddingShardFileRow)
            .where(EmbeddingShardFileRow.shard_key == key)
            .values(sha256=hashlib.sha256(data).hexdigest())
        )


def _delete(store: LocalObjectStore, engine: Engine, key: str) -> None:
    store.delete(key)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate, "checksum mismatch"),
        (_flip_bytes, "checksum mismatch"),
        (_wrong_shape_with_matching_checksum, "expected float32"),
        (_delete, "object is missing"),
    ],
    ids=["truncated", "flipped-bytes", "wrong-shape", "deleted"],
)
def test_damaged_shard_is_refused_evicted_and_recomputable(
    store: LocalObjectStore, engine: Engine, damage, reason: str
) -> None:
    cache, ids, emb = filled(store, engine, n=10, shard_size=4)
    victim = _shard_of(cache, ids[5])
    in_victim = [s for s in ids if _shard_of(cache, s) == victim]
    damage(store, engine, victim)

    with pytest.raises(DamagedShard, match=reason):
        cache.get(ids)
    healthy = [s for s in ids if s not in in_victim]
    np.testing.assert_array_equal(cache.get(healthy), emb[[ids.index(s) for s in healthy]])

    assert cache.verify_and_evict_damaged() == [victim]
    assert cache.missing(ids) == in_victim  # exactly the damaged shard's images are to recompute
    assert not store.exists(victim)
    if reason != "object is missing":
        assert [i.key for i in store.list(f"embeddings/{KEY}/damaged/")] != []
    assert cache.verify_and_evict_damaged() == []  # nothing else was touched

    index = [ids.index(s) for s in in_victim]
    cache.put(in_victim, emb[index])
    np.testing.assert_array_equal(cache.get(ids), emb)
    assert cache.verify_and_evict_damaged() == []


def test_other_cache_keys_are_left_alone(store: LocalObjectStore, engine: Engine) -> None:
    cache, ids, _ = filled(store, engine)
    other = EmbeddingCache(store, engine, encoder_cache_key("w2", "p", "embed-v1"))
    other.put(ids[:3], vectors(3, seed=1))
    _truncate(store, engine, _shard_of(cache, ids[0]))
    assert len(cache.verify_and_evict_damaged()) == 1
    assert other.verify_and_evict_damaged() == [] and other.count() == 3
