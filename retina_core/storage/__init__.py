"""Object storage: one interface, a local-directory and an S3 implementation, chosen by URL.

``RETINA_STORAGE_URL`` is the only switch between a laptop run (``file:///…``) and a
cluster run (``s3://bucket/prefix``); nothing else in the pipeline knows which it got.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from retina_core.storage.base import (
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    ObjectTooLarge,
    StorageError,
    StorageUnavailable,
    SymlinkRefused,
    UnsafeKeyError,
    redact_url,
    validate_key,
)
from retina_core.storage.local import LocalObjectStore
from retina_core.storage.s3 import S3ObjectStore

_EXPECTED = "expected file:///absolute/path, a plain path, or s3://bucket[/prefix]"


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ``("bucket", "some/prefix")``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"not an S3 URL: {redact_url(url)!r}; expected s3://bucket[/prefix]")
    return parts.netloc, parts.path.strip("/")


def open_store(url: str, *, s3_endpoint_url: str | None = None) -> ObjectStore:
    """The store a storage URL names; ``s3_endpoint_url`` points S3 at MinIO or another server."""
    if not url or not url.strip():
        raise ValueError(f"empty storage URL; {_EXPECTED}")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "s3":
        bucket, prefix = split_s3_url(url)
        return S3ObjectStore(bucket, prefix, endpoint_url=s3_endpoint_url)
    if scheme == "file":
        return LocalObjectStore(_file_url_path(url))
    if scheme == "":
        return LocalObjectStore(Path(url))
    raise ValueError(f"unsupported storage URL scheme {scheme!r} in {redact_url(url)!r}; {_EXPECTED}")


def _file_url_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file URL {redact_url(url)!r} names a host; {_EXPECTED} (three slashes)")
    path = Path(url2pathname(unquote(parts.path)))
    if not path.is_absolute():
        raise ValueError(f"file URL {url!r} is not absolute; {_EXPECTED}")
    return path


__all__ = [
    "LocalObjectStore",
    "ObjectExistsError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectTooLarge",
    "S3ObjectStore",
    "StorageError",
    "StorageUnavailable",
    "SymlinkRefused",
    "UnsafeKeyError",
    "open_store",
    "split_s3_url",
    "validate_key",
]
