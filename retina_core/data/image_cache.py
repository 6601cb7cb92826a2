"""The preprocessed-image cache: each (image, preprocessing) decoded and resized once.

Entries are raw ``.npy`` bytes (a header and the pixels, so loading is a copy, not a
decode) under ``cache/preprocessed/{modality}/{size}/{fingerprint}/{sha256}.npy``. The
fingerprint of the preprocessing is in the key, so changing the preprocessing starts a
new cache beside the old one instead of mixing the two.

A cache must never hand out a damaged entry as data. :meth:`PreprocessedCache.ensure`
compares each entry's size with the exact size an ``.npy`` of the expected shape has
(one listing, no downloads) and recomputes any that differ; ``verify=True`` also decodes
every entry. :meth:`PreprocessedCache.load` checks what it decodes and raises
:class:`CorruptCacheEntry` rather than returning a wrong array.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from retina_core.data.preprocess import Preprocessing, preprocess
from retina_core.data.records import ImageRecord
from retina_core.storage import ObjectStore

logger = logging.getLogger(__name__)

CACHE_ROOT = "cache/preprocessed"
_SHA256 = re.compile(r"[0-9a-f]{64}")

ImageLoader = Callable[[], bytes]
"""Returns the original image bytes; called only for entries that must be computed."""


class CorruptCacheEntry(ValueError):
    """A cached entry exists but does not decode to the expected array; `ensure` rebuilds it."""


@dataclass(frozen=True)
class CacheStats:
    computed: int
    reused: int


class PreprocessedCache:
    """Preprocessed uint8 arrays for one :class:`Preprocessing` in an object store."""

    def __init__(self, store: ObjectStore, preprocessing: Preprocessing) -> None:
        self.store = store
        self.preprocessing = preprocessing
        self.fingerprint = preprocessing.fingerprint
        self.prefix = f"{CACHE_ROOT}/{preprocessing.modality}/{preprocessing.image_size}/{self.fingerprint}"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.preprocessing.shape

    def key(self, sha256: str) -> str:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
        return f"{self.prefix}/{sha256}.npy"

    def ensure(
        self, items: Iterable[tuple[str, ImageLoader]], *, workers: int = 1, verify: bool = False
    ) -> CacheStats:
        """Preprocess and store the entries that are missing or damaged; reuse the rest.

        ``workers`` > 1 runs the misses in a thread pool (decoding and OpenCV release the
        GIL). ``verify`` decodes every existing entry instead of trusting its size.
        """
        pending = dict(items)
        present = {info.key: info.size for info in self.store.list(self.prefix + "/")}
        todo: list[tuple[str, ImageLoader, bool]] = []
        for sha, loader in pending.items():
            key = self.key(sha)
            if key in present and present[key] == self._entry_bytes and (not verify or self._is_valid(sha)):
                continue
            damaged = key in present
            if damaged:
                logger.warning("recomputing damaged cache entry %s", key)
            todo.append((sha, loader, damaged))
        self._run(lambda job: self._compute(*job), todo, workers)
        stats = CacheStats(computed=len(todo), reused=len(pending) - len(todo))
        logger.info(
            "preprocessed cache %s: %d computed, %d reused", self.prefix, stats.computed, stats.reused
        )
        return stats

    def load(self, sha256: str) -> np.ndarray:
        """The cached array; raises CorruptCacheEntry if it is damaged, the store's
        ObjectNotFoundError if it was never computed."""
        key = self.key(sha256)
        data = self.store.get_bytes(key)
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise CorruptCacheEntry(f"{key}: not a readable .npy ({exc})") from exc
        if array.shape != self.shape or array.dtype != np.uint8:
            raise CorruptCacheEntry(f"{key}: {array.dtype}{array.shape}, expected uint8{self.shape}")
        return array

    def load_many(self, shas: Sequence[str], *, workers: int = 1) -> np.ndarray:
        """Stacked (N, H, W[, C]) uint8, in the order given."""
        out = np.empty((len(shas), *self.shape), dtype=np.uint8)

        def fill(index: int) -> None:
            out[index] = self.load(shas[index])

        self._run(fill, range(len(shas)), workers)
        return out

    @cached_property
    def _entry_bytes(self) -> int:
        """Exact size of a valid entry: the .npy header length depends only on shape and dtype."""
        return len(_to_npy(np.zeros(self.shape, dtype=np.uint8)))

    def _is_valid(self, sha256: str) -> bool:
        try:
            self.load(sha256)
        except CorruptCacheEntry:
            return False
        return True

    def _compute(self, sha256: str, loader: ImageLoader, overwrite: bool) -> None:
        array = preprocess(loader(), self.preprocessing)
        self.store.put_bytes(self.key(sha256), _to_npy(array), overwrite=overwrite)

    @staticmethod
    def _run(fn: Callable[..., None], jobs: Iterable[object], workers: int) -> None:
        if workers <= 1:
            for job in jobs:
                fn(job)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(fn, jobs):  # iterate to re-raise the first failure
                pass


def ensure_preprocessed(
    cache: PreprocessedCache, records: Sequence[ImageRecord], *, workers: int = 2
) -> CacheStats:
    """Decode + crop + resize each catalogued original once; later epochs and runs read the cache."""
    store = cache.store
    return cache.ensure(
        [(r.sha256, lambda key=r.object_key: store.get_bytes(key)) for r in records], workers=workers
    )


def _to_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
