"""The preprocessed-image cache over a real local object store."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retina_core.data.image_cache import CorruptCacheEntry, PreprocessedCache
from retina_core.data.preprocess import Preprocessing, preprocess
from retina_core.domain import Modality
from retina_core.storage import LocalObjectStore, ObjectNotFoundError, ObjectStore

SIZE = 32


def _png(seed: int, mode: str) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (40, 56, 3) if mode == "RGB" else (40, 56)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(40, 255, size=shape, dtype=np.uint8), mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


class CountingSource:
    """Original images by sha256, counting how often the cache had to read one."""

    def __init__(self, n: int, mode: str = "RGB") -> None:
        blobs = [_png(seed, mode) for seed in range(n)]
        self.blobs = {hashlib.sha256(b).hexdigest(): b for b in blobs}
        self.reads = 0

    def items(self) -> list[tuple[str, Callable[[], bytes]]]:
        return [(sha, lambda sha=sha: self._read(sha)) for sha in self.blobs]

    def _read(self, sha: str) -> bytes:
        self.reads += 1
        return self.blobs[sha]


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


def test_ensure_computes_once_then_reuses(object_store: ObjectStore) -> None:
    """Local and S3 (moto over HTTP): the size check relies on what each store lists."""
    source = CountingSource(4)
    cache = PreprocessedCache(object_store, Preprocessing.for_modality(Modality.FUNDUS, SIZE))
    first = cache.ensure(source.items())
    assert (first.computed, first.reused) == (4, 0)
    second = cache.ensure(source.items(), workers=2)
    assert (second.computed, second.reused) == (0, 4)
    assert source.reads == 4


def test_keys_carry_modality_size_and_preprocessing_fingerprint(store: LocalObjectStore) -> None:
    source = CountingSource(2)
    cache = PreprocessedCache(store, Preprocessing.for_modality(Modality.FUNDUS, SIZE, ben_graham=True))
    cache.ensure(source.items())
    fp = Preprocessing.for_modality(Modality.FUNDUS, SIZE, ben_graham=True).fingerprint
    expected = {f"cache/preprocessed/fundus/{SIZE}/{fp}/{sha}.npy" for sha in source.blobs}
    assert {info.key for info in store.list("cache/")} == expected
    # A different preprocessing is a different cache: nothing is reused across it.
    assert (
        PreprocessedCache(store, Preprocessing.for_modality(Modality.FUNDUS, SIZE))
        .ensure(source.items())
        .computed
        == 2
    )


def test_load_matches_preprocess_and_load_many_stacks(object_store: ObjectStore) -> None:
    source = CountingSource(3, mode="L")
    cache = PreprocessedCache(object_store, Preprocessing.for_modality(Modality.OCT, SIZE))
    cache.ensure(source.items(), workers=2)
    shas = list(source.blobs)
    for sha in shas:
        np.testing.assert_array_equal(
            cache.load(sha), preprocess(source.blobs[sha], Preprocessing.for_modality(Modality.OCT, SIZE))
        )
    stacked = cache.load_many(shas[::-1], workers=2)
    assert stacked.shape == (3, SIZE, SIZE) and stacked.dtype == np.uint8
    np.testing.assert_array_equal(stacked[0], cache.load(shas[-1]))


def test_truncated_entry_is_recomputed(store: LocalObjectStore) -> None:
    source = CountingSource(3)
    cache = PreprocessedCache(store, Preprocessing.for_modality(Modality.FUNDUS, SIZE))
    cache.ensure(source.items())
    damaged = next(iter(source.blobs))
    path = store.local_path(cache.key(damaged))
    assert path is not None
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptCacheEntry, match=damaged):
        cache.load(damaged)
    stats = cache.ensure(source.items())
    assert (stats.computed, stats.reused) == (1, 2)
    assert cache.load(damaged).shape == (SIZE, SIZE, 3)


def test_same_size_damage_is_found_by_verify(store: LocalObjectStore) -> None:
    source = CountingSource(2)
    cache = PreprocessedCache(store, Preprocessing.for_modality(Modality.FUNDUS, SIZE))
    cache.ensure(source.items())
    damaged = next(iter(source.blobs))
    path = store.local_path(cache.key(damaged))
    assert path is not None
    path.write_bytes(b"\0" * len(path.read_bytes()))  # right size, no .npy header
    with pytest.raises(CorruptCacheEntry):
        cache.load(damaged)
    assert cache.ensure(source.items()).computed == 0  # a size check cannot see this
    assert cache.ensure(source.items(), verify=True).computed == 1
    np.testing.assert_array_equal(
        cache.load(damaged),
        preprocess(source.blobs[damaged], Preprocessing.for_modality(Modality.FUNDUS, SIZE)),
    )


def test_wrong_shape_entry_is_corrupt(store: LocalObjectStore) -> None:
    cache = PreprocessedCache(store, Preprocessing.for_modality(Modality.FUNDUS, SIZE))
    sha = "a" * 64
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((SIZE, SIZE), dtype=np.uint8))
    store.put_bytes(cache.key(sha), buffer.getvalue())
    with pytest.raises(CorruptCacheEntry, match="expected uint8"):
        cache.load(sha)


def test_missing_entry_and_bad_sha(store: LocalObjectStore) -> None:
    cache = PreprocessedCache(store, Preprocessing.for_modality(Modality.OCT, SIZE))
    with pytest.raises(ObjectNotFoundError):
        cache.load("b" * 64)
    with pytest.raises(ValueError, match="SHA-256"):
        cache.key("../../etc/passwd")
