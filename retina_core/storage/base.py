"""The object-store contract shared by the local and the S3 implementation.

Everything the pipeline persists (curated images, caches, embeddings, models, reports)
goes through this small interface, so a run moves from a laptop to MinIO or S3 by
changing one URL. Objects are immutable by default: a second write of the same bytes
is a no-op and a write of different bytes is an error, which is what makes retried
Prefect tasks and racing workers safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

TEMP_PREFIX = ".tmp-"
"""Name prefix of in-flight files; reserved so that `list` can tell them from finished objects."""


class StorageError(Exception):
    """Any object-store failure; messages name the key and never carry credentials."""


class ObjectNotFoundError(StorageError):
    """No object at that key."""


class StorageUnavailable(StorageError):
    """The store did not answer (connection refused or cut, timeout, 5xx) even after the client's retries.

    Says nothing about the object itself: the same call may succeed later, so callers
    retry the whole step instead of recording a verdict about the data.
    """


class ObjectExistsError(StorageError):
    """A *different* object already exists at that key and overwriting was not asked for."""


class UnsafeKeyError(StorageError, ValueError):
    """The key could address something outside the store (absolute, ``..``, hostile symlink)."""


class SymlinkRefused(UnsafeKeyError):
    """The key names a symbolic link (or passes through one): local reads never follow links.

    Following one would read whatever the link points at *when it is opened*, not what was
    checked; refusing makes what is validated what is read.
    """


class ObjectTooLarge(StorageError):
    """The object is larger than the caller's limit; nothing beyond the limit was read."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    """Relative to the store (or view) that listed it, ``/``-separated."""
    size: int
    """Bytes."""


def validate_key(key: str) -> str:
    """Reject keys that could escape the store or differ between backends.

    The same rules apply locally and on S3 so that a key valid in tests is valid in
    production: relative, ``/``-separated, no empty, ``.`` or ``..`` segment, no
    backslash or NUL, and no segment using the reserved temporary prefix.
    """
    if not isinstance(key, str) or not key:
        raise UnsafeKeyError(f"object key must be a non-empty string, got {key!r}")
    if "\x00" in key or "\\" in key:
        raise UnsafeKeyError(f"object key must not contain NUL or backslashes: {key!r}")
    if key.startswith("/"):
        raise UnsafeKeyError(f"object key must be relative, not absolute: {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise UnsafeKeyError(f"object key has an empty, '.' or '..' segment: {key!r}")
        if segment.startswith(TEMP_PREFIX):
            raise UnsafeKeyError(f"object key uses the reserved prefix {TEMP_PREFIX!r}: {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix is a key, or the start of one: empty and a trailing ``/`` are allowed."""
    if prefix == "":
        return prefix
    body = prefix[:-1] if prefix.endswith("/") else prefix
    if body == "":
        raise UnsafeKeyError(f"prefix must be relative, not absolute: {prefix!r}")
    validate_key(body)
    return prefix


def redact_url(url: str) -> str:
    """Drop any ``user:password@`` from a URL so it can go into a log line or an error."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def join_key(prefix: str, key: str) -> str:
    """Join a store prefix and a relative key without doubling or dropping the separator."""
    return f"{prefix}/{key}" if prefix else key


@runtime_checkable
class ObjectStore(Protocol):
    """Immutable-by-default blob storage addressed by ``/``-separated keys."""

    @property
    def url(self) -> str:
        """A URL that :func:`retina_core.storage.open_store` turns back into this store."""
        ...

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        """Store atomically; False when the identical object was already there.

        Raises ObjectExistsError when different content exists and ``overwrite`` is False.
        """
        ...

    def put_file(self, key: str, path: Path, *, overwrite: bool = False) -> bool:
        """Like `put_bytes`, streaming from a file."""
        ...

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; ObjectTooLarge (before reading them) when it exceeds ``max_bytes``."""
        ...

    def get_file(self, key: str, dest: Path) -> Path:
        """Copy to ``dest`` atomically (a reader never sees half a file); returns ``dest``."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Finished objects whose key starts with ``prefix``, recursively, sorted by key."""
        ...

    def delete(self, key: str) -> None:
        """Remove a cache entry or temporary; a missing key is fine. Curated data is never deleted."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A real file path for readers that open or mmap directly; None when not local."""
        ...

    def child(self, prefix: str) -> ObjectStore:
        """A view rooted at ``prefix``; its keys are relative to it."""
        ...


__all__ = [
    "TEMP_PREFIX",
    "ObjectExistsError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectTooLarge",
    "StorageError",
    "StorageUnavailable",
    "SymlinkRefused",
    "UnsafeKeyError",
    "join_key",
    "redact_url",
    "validate_key",
    "validate_prefix",
]
