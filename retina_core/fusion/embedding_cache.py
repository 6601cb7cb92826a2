"""The embedding cache: frozen-encoder embeddings, content-addressed, in object-store shards.

An embedding is a pure function of (encoder weights, preprocessing, embedding code, image
bytes), so ``cache_key`` hashes the first three and the image's SHA-256 names the rest:
a retrain with the same encoder reuses every embedding, a new encoder starts a new key
beside the old one, and nothing is ever overwritten in place.

Layout::

    embeddings/{cache_key}/{shard_id}.safetensors          "embeddings" float32 (N, D) + metadata
    embeddings/{cache_key}/damaged/{shard_id}-{time}.safetensors   set aside, never read again

``shard_id`` is the SHA-256 of the shard's bytes, so a retried write lands on the same
key as a no-op. The catalog indexes the cache (``embedding_shards``: one row per shard with
its checksum; ``embedding_entries``: which shard and row holds each image). The object is
written first and the index rows after, in one transaction with ON CONFLICT DO NOTHING,
so a reader never finds an index row without its object and two racing writers never
index one image twice.

A damaged shard (missing, truncated, altered, wrong shape) is never used: :meth:`get`
raises :class:`DamagedShard`, and :meth:`verify_and_evict_damaged` drops the index rows of
damaged shards so that the next embedding run recomputes exactly those images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from sqlalchemy import Engine, delete, select

from retina_core.catalog.db import session_scope, upsert
from retina_core.catalog.models import EmbeddingShardFileRow, EmbeddingShardRow, utcnow
from retina_core.storage.base import ObjectExistsError, ObjectNotFoundError, ObjectStore

logger = logging.getLogger(__name__)

EMBEDDINGS_ROOT = "embeddings"
TENSOR_NAME = "embeddings"
_HEX = re.compile(r"[0-9a-f]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_QUERY_CHUNK = 500
"""Bound parameters per IN (...) query: SQLite's limit is far above, but huge IN lists are slow."""


class DamagedShard(ValueError):
    """A shard that is missing, unreadable or not what its index row says; its data is never used."""

    def __init__(self, shard_key: str, reason: str) -> None:
        super().__init__(f"damaged embedding shard {shard_key}: {reason}")
        self.shard_key = shard_key
        self.reason = reason


class MissingEmbeddings(LookupError):
    """Embeddings were asked for images the cache does not hold (compute them first)."""

    def __init__(self, shas: Sequence[str]) -> None:
        super().__init__(f"{len(shas)} images have no cached embedding (first: {shas[0]})")
        self.shas = list(shas)


@dataclass(frozen=True)
class ShardRecord:
    """The index row of one shard: what its object must contain."""

    shard_key: str
    n: int
    dim: int
    sha256: str


def encoder_cache_key(weights_sha256: str, preprocess_fingerprint: str, embed_code_version: str) -> str:
    """Identity of "what produced these embeddings": 32 hex characters of a SHA-256.

    Device and precision are deliberately not part of it: an embedding computed on a GPU in
    bf16 and one computed on a CPU in fp32 differ by rounding far below what the fusion head
    can resolve, and keying on them would throw the cache away whenever a run moves machines.
    """
    payload = json.dumps([weights_sha256, preprocess_fingerprint, embed_code_version])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _chunks(items: Sequence[str], size: int = _QUERY_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def shard_bytes(shas: Sequence[str], embeddings: np.ndarray, cache_key: str) -> bytes:
    """A shard's safetensors bytes; the metadata repeats the image ids so a shard explains itself.

    The header is rewritten with sorted keys: safetensors emits the metadata map in an order
    that changes from process to process (a Rust HashMap), and the shard's key is the hash
    of these bytes, so without it a re-run after a crash would write the same shard again
    under a second key instead of finding the first.
    """
    metadata = {"shas": json.dumps(list(shas)), "dim": str(embeddings.shape[1]), "cache_key": cache_key}
    data = st_save({TENSOR_NAME: np.ascontiguousarray(embeddings, dtype=np.float32)}, metadata=metadata)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.dumps(json.loads(data[8 : 8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # tensor data stays 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(header)) + header + data[8 + length :]


def shard_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob, read from its header without loading tensors."""
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError("header runs past the end of the data")
    header = json.loads(data[8 : 8 + length])
    return dict(header.get("__metadata__") or {})


class EmbeddingCache:
    """The cached embeddings of one encoder (one ``cache_key``), shared by every run and worker."""

    def __init__(self, store: ObjectStore, engine: Engine, cache_key: str, *, shard_size: int = 256) -> None:
        if not (len(cache_key) == 32 and _HEX.fullmatch(cache_key)):
            raise ValueError(f"cache_key must be 32 lowercase hex characters, got {cache_key!r}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        self.store = store
        self.engine = engine
        self.cache_key = cache_key
        self.shard_size = shard_size
        self.prefix = f"{EMBEDDINGS_ROOT}/{cache_key}"

    def __repr__(self) -> str:
        return f"EmbeddingCache({self.cache_key!r})"

    # -- index queries -------------------------------------------------------------------

    def missing(self, shas: Sequence[str]) -> list[str]:
        """The images among ``shas`` with no index entry, in the order given, without repeats."""
        wanted = list(dict.fromkeys(shas))
        present: set[str] = set()
        with session_scope(self.engine) as session:
            for chunk in _chunks(wanted):
                present.update(
                    session.execute(
                        select(EmbeddingShardRow.sha256).where(
                            EmbeddingShardRow.cache_key == self.cache_key, EmbeddingShardRow.sha256.in_(chunk)
                        )
                    ).scalars()
                )
        return [sha for sha in wanted if sha not in present]

    def count(self) -> int:
        """Images with an index entry under this cache key."""
        with session_scope(self.engine) as session:
            return len(
                session.execute(
                    select(EmbeddingShardRow.id).where(EmbeddingShardRow.cache_key == self.cache_key)
                ).all()
            )

    def shards(self) -> list[ShardRecord]:
        with session_scope(self.engine) as session:
            rows = session.execute(
                select(EmbeddingShardFileRow)
                .where(EmbeddingShardFileRow.cache_key == self.cache_key)
                .order_by(EmbeddingShardFileRow.shard_key)
            ).scalars()
            return [ShardRecord(r.shard_key, r.n, r.dim, r.sha256) for r in rows]

    # -- writing -------------------------------------------------------------------------

    def put(self, shas: Sequence[str], embeddings: np.ndarray) -> list[str]:
        """Store embeddings (row i belongs to ``shas[i]``) in shards of at most ``shard_size``.

        Each shard's object is written before its index rows, which commit in one
        transaction per shard. Images already indexed keep their existing entry (ON
        CONFLICT DO NOTHING), so racing writers never duplicate. Returns the shard keys.
        """
        array = np.asarray(embeddings)
        shas = list(shas)
        self._check_batch(shas, array)
        if not shas:
            return []
        array = array.astype(np.float32, copy=False)
        keys = []
        for start in range(0, len(shas), self.shard_size):
            part = shas[start : start + self.shard_size]
            keys.append(self._put_shard(part, array[start : start + len(part)]))
        logger.info(
            "embedding cache %s: stored %d embeddings in %d shards", self.cache_key, len(shas), len(keys)
        )
        return keys

    def _check_batch(self, shas: list[str], array: np.ndarray) -> None:
        if array.ndim != 2 or array.shape[0] != len(shas):
            raise ValueError(f"expected embeddings of shape ({len(shas)}, D), got {array.shape}")
        if len(set(shas)) != len(shas):
            raise ValueError("shas must not repeat within one put")
        bad = [s for s in shas if not _SHA256.fullmatch(s)]
        if bad:
            raise ValueError(f"not a lowercase hex SHA-256: {bad[0]!r}")
        if array.size and not np.all(np.isfinite(array)):
            raise ValueError("embeddings contain NaN or infinite values; refusing to cache them")
        dims = {s.dim for s in self.shards()}
        if shas and dims and dims != {array.shape[1]}:
            raise ValueError(
                f"cache {self.cache_key} holds {sorted(dims)}-wide embeddings, not {array.shape[1]}: "
                "one cache key is one encoder"
            )

    def _put_shard(self, shas: Sequence[str], embeddings: np.ndarray) -> str:
        data = shard_bytes(shas, embeddings, self.cache_key)
        checksum = hashlib.sha256(data).hexdigest()
        key = f"{self.prefix}/{checksum[:32]}.safetensors"
        try:
            self.store.put_bytes(key, data)
        except ObjectExistsError:
            # The key is the hash of these bytes, so different bytes there are a damaged
            # leftover whose index rows were already dropped: set it aside and write ours.
            self._set_aside(key, "different bytes under a content-addressed key")
            self.store.put_bytes(key, data)
        with session_scope(self.engine) as session:
            session.execute(
                upsert(session, EmbeddingShardFileRow)
                .values(
                    shard_key=key,
                    cache_key=self.cache_key,
                    n=len(shas),
                    dim=int(embeddings.shape[1]),
                    sha256=checksum,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["shard_key"])
            )
            now = utcnow()
            session.execute(
                upsert(session, EmbeddingShardRow)
                .values(
                    [
                        {
                            "cache_key": self.cache_key,
                            "sha256": sha,
                            "shard_key": key,
                            "row": row,
                            "created_at": now,
                        }
                        for row, sha in enumerate(shas)
                    ]
                )
                .on_conflict_do_nothing(index_elements=["cache_key", "sha256"])
            )
        return key

    # -- reading -------------------------------------------------------------------------

    def get(self, shas: Sequence[str]) -> np.ndarray:
        """Embeddings (len(shas), D) float32 in the order given.

        Every shard read is checked against its index row (checksum, shape, image ids);
        any mismatch raises :class:`DamagedShard`. Images without an entry raise
        :class:`MissingEmbeddings`.
        """
        shas = list(shas)
        located = self._locate(shas)
        absent = [s for s in dict.fromkeys(shas) if s not in located]
        if absent:
            raise MissingEmbeddings(absent)
        by_shard: dict[str, list[str]] = {}
        for sha in dict.fromkeys(shas):
            by_shard.setdefault(located[sha][0].shard_key, []).append(sha)
        found: dict[str, np.ndarray] = {}
        dim = None
        for shard_shas in by_shard.values():
            record = located[shard_shas[0]][0]
            array, ids = self._read(record)
            dim = record.dim
            for sha in shard_shas:
                row = located[sha][1]
                if row >= len(ids) or ids[row] != sha:
                    raise DamagedShard(record.shard_key, f"row {row} is not image {sha[:12]}…")
                found[sha] = array[row]
        if not shas:
            return np.zeros((0, 0), dtype=np.float32)
        out = np.empty((len(shas), dim or 0), dtype=np.float32)
        for i, sha in enumerate(shas):
            out[i] = found[sha]
        return out

    def _locate(self, shas: Sequence[str]) -> dict[str, tuple[ShardRecord, int]]:
        out: dict[str, tuple[ShardRecord, int]] = {}
        with session_scope(self.engine) as session:
            for chunk in _chunks(list(dict.fromkeys(shas))):
                rows = session.execute(
                    select(
                        EmbeddingShardRow.sha256,
                        EmbeddingShardRow.row,
                        EmbeddingShardRow.shard_key,
                        EmbeddingShardFileRow.n,
                        EmbeddingShardFileRow.dim,
                        EmbeddingShardFileRow.sha256,
                    )
                    .join(
                        EmbeddingShardFileRow,
                        EmbeddingShardFileRow.shard_key == EmbeddingShardRow.shard_key,
                        isouter=True,
                    )
                    .where(EmbeddingShardRow.cache_key == self.cache_key, EmbeddingShardRow.sha256.in_(chunk))
                )
                for sha, row, key, n, dim, checksum in rows:
                    if checksum is None:
                        raise DamagedShard(key, "indexed entries but no shard record (no checksum to verify)")
                    out[sha] = (ShardRecord(key, n, dim, checksum), row)
        return out

    def _read(self, record: ShardRecord) -> tuple[np.ndarray, list[str]]:
        """The shard's array and image ids, after every check its index row allows."""
        try:
            data = self.store.get_bytes(record.shard_key)
        except ObjectNotFoundError as exc:
            raise DamagedShard(record.shard_key, "object is missing") from exc
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise DamagedShard(record.shard_key, f"checksum mismatch ({len(data)} bytes)")
        try:
            tensors = st_load(data)
            ids = json.loads(shard_metadata(data)["shas"])
        except (SafetensorError, ValueError, KeyError) as exc:
            raise DamagedShard(record.shard_key, f"unreadable ({exc})") from exc
        array = tensors.get(TENSOR_NAME)
        expected = (record.n, record.dim)
        if array is None or array.dtype != np.float32 or array.shape != expected:
            got = "no embeddings tensor" if array is None else f"{array.dtype}{array.shape}"
            raise DamagedShard(record.shard_key, f"{got}, expected float32{expected}")
        if len(ids) != record.n:
            raise DamagedShard(record.shard_key, f"metadata names {len(ids)} images, expected {record.n}")
        return array, ids

    # -- repair --------------------------------------------------------------------------

    def verify_and_evict_damaged(self) -> list[str]:
        """Check every shard of this cache key; un-index the damaged ones so they are recomputed.

        Only index rows are dropped; a damaged object is moved under ``damaged/`` (kept for
        inspection, never read again). Healthy shards and other cache keys are untouched.
        Returns the evicted shard keys.
        """
        damaged: dict[str, str] = {}
        for record in self.shards():
            try:
                self._read(record)
            except DamagedShard as exc:
                damaged[record.shard_key] = exc.reason
        damaged.update({key: "indexed entries but no shard record" for key in self._unrecorded_shards()})
        if not damaged:
            return []
        keys = sorted(damaged)
        with session_scope(self.engine) as session:
            for chunk in _chunks(keys):
                session.execute(
                    delete(EmbeddingShardRow).where(
                        EmbeddingShardRow.cache_key == self.cache_key, EmbeddingShardRow.shard_key.in_(chunk)
                    )
                )
                session.execute(
                    delete(EmbeddingShardFileRow).where(EmbeddingShardFileRow.shard_key.in_(chunk))
                )
        for key in keys:
            logger.warning("evicted damaged embedding shard %s: %s", key, damaged[key])
            self._set_aside(key, damaged[key])
        return keys

    def _unrecorded_shards(self) -> list[str]:
        with session_scope(self.engine) as session:
            return list(
                session.execute(
                    select(EmbeddingShardRow.shard_key)
                    .distinct()
                    .join(
                        EmbeddingShardFileRow,
                        EmbeddingShardFileRow.shard_key == EmbeddingShardRow.shard_key,
                        isouter=True,
                    )
                    .where(
                        EmbeddingShardRow.cache_key == self.cache_key,
                        EmbeddingShardFileRow.shard_key.is_(None),
                    )
                ).scalars()
            )

    def _set_aside(self, key: str, reason: str) -> None:
        """Move an object under ``damaged/`` (copy, then remove the original): kept, never read."""
        try:
            data = self.store.get_bytes(key)
        except ObjectNotFoundError:
            return
        shard_id = key.rsplit("/", 1)[-1].removesuffix(".safetensors")
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
        self.store.put_bytes(f"{self.prefix}/damaged/{shard_id}-{stamp}.safetensors", data)
        self.store.delete(key)
        logger.info("moved %s under %s/damaged/ (%s)", key, self.prefix, reason)
