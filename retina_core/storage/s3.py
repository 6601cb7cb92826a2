"""The object store on S3 or any S3-compatible server (MinIO), through boto3.

Each object is written with one PUT carrying the SHA-256 of the bytes: the server
rejects a corrupted upload, and the same digest kept in the ``sha256`` metadata makes
a repeated write recognisable as identical. ``If-None-Match: *`` closes the gap
between the existence check and the PUT where the server supports conditional writes.

Errors are rebuilt from the error code, HTTP status and key only, with the botocore
exception suppressed, so that no credential can reach a log, a report or a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import IO, Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from retina_core.storage.atomic import file_sha256, temporary_file
from retina_core.storage.base import (
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectTooLarge,
    StorageError,
    StorageUnavailable,
    join_key,
    redact_url,
    validate_key,
    validate_prefix,
)

logger = logging.getLogger(__name__)

CLIENT_CONFIG = Config(
    # botocore's standard mode backs off from 50 ms (full jitter, doubling, capped at 20 s) for
    # connection errors; 11 retries wait ~30 s on average, so an endpoint that is away for
    # several seconds is ridden out here (8 retries averaged ~6 s and often failed at 4 s).
    retries={"max_attempts": 11, "mode": "standard"},
    connect_timeout=5,
    read_timeout=60,
)
_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_UNREACHABLE = (BotoConnectionError, HTTPClientError, IncompleteReadError)
"""Refused, cut, timed out or truncated: the endpoint, not the request, is the problem."""
_WRITE_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict"}
_CONDITIONAL_UNSUPPORTED = {"NotImplemented", "InvalidArgument", "InvalidRequest"}

Body = bytes | IO[bytes]


class _WriteConflict(Exception):
    """The conditional PUT lost: another writer created the key first."""


def make_s3_client(endpoint_url: str | None = None) -> BaseClient:
    """A client with patient retries; path-style addressing for custom endpoints (MinIO, moto)."""
    config = CLIENT_CONFIG
    if endpoint_url is not None:
        config = config.merge(Config(s3={"addressing_style": "path"}))
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


class S3ObjectStore:
    """Objects under ``s3://bucket/prefix/``; keys are relative to the prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        client: BaseClient | None = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid S3 bucket name: {bucket!r}")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self._bucket = bucket
        self._prefix = prefix
        self._endpoint_url = endpoint_url
        self._client = client if client is not None else make_s3_client(endpoint_url)
        self._conditional_writes = True

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={redact_url(self._endpoint_url)!r}" if self._endpoint_url else ""
        return f"S3ObjectStore({self.url!r}{endpoint})"

    @property
    def url(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}" if self._prefix else f"s3://{self._bucket}"

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        return self._prefix

    # -- writing -------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        return self._put(key, hashlib.sha256(data).digest(), lambda: nullcontext(data), overwrite)

    def put_file(self, key: str, path: Path, *, overwrite: bool = False) -> bool:
        source = Path(path)
        return self._put(key, file_sha256(source), lambda: source.open("rb"), overwrite)

    def _put(
        self,
        key: str,
        digest: bytes,
        open_body: Callable[[], AbstractContextManager[Body]],
        overwrite: bool,
    ) -> bool:
        full = self._full(key)
        existing = self._head(full)
        if existing is not None and self._holds(full, existing, digest, overwrite):
            return False
        try:
            with open_body() as body:
                self._put_object(full, body, digest, conditional=not overwrite)
        except _WriteConflict:
            existing = self._head(full)
            if existing is None:
                raise StorageError(
                    f"conditional write to {self._where(full)} conflicted, then vanished"
                ) from None
            self._holds(full, existing, digest, overwrite=False)
            return False
        logger.debug("stored %s", self._where(full))
        return True

    def _put_object(self, full: str, body: Body, digest: bytes, *, conditional: bool) -> None:
        conditional = conditional and self._conditional_writes
        request: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": full,
            "Body": body,
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": base64.b64encode(digest).decode("ascii"),
            "Metadata": {"sha256": digest.hex()},
        }
        if conditional:
            request["IfNoneMatch"] = "*"
        with self._errors("PUT", full):
            try:
                self._client.put_object(**request)
            except ClientError as exc:
                code = _code(exc)
                if conditional and code in _WRITE_CONFLICT:
                    raise _WriteConflict from None
                if not (conditional and code in _CONDITIONAL_UNSUPPORTED):
                    raise
                logger.warning("%s rejects conditional writes (%s); writing without them", self, code)
                self._conditional_writes = False
                if not isinstance(body, bytes):
                    body.seek(0)
                del request["IfNoneMatch"]
                self._client.put_object(**request)

    def _holds(self, full: str, head: dict[str, Any], digest: bytes, overwrite: bool) -> bool:
        """True when the object ``head`` describes has exactly these bytes.

        Raises ObjectExistsError when it differs and overwriting was not asked for.
        """
        stored = self._stored_digest(full, head)
        if stored == digest.hex():
            return True
        if overwrite:
            return False
        raise ObjectExistsError(f"a different object already exists at {self._where(full)}")

    def _stored_digest(self, full: str, head: dict[str, Any]) -> str:
        """SHA-256 of a stored object: from our metadata, the server's checksum, or by reading it."""
        recorded = head.get("Metadata", {}).get("sha256")
        if recorded:
            return str(recorded).lower()
        checksum = head.get("ChecksumSHA256")
        if checksum and "-" not in checksum:  # "-N" marks a multipart composite checksum
            return base64.b64decode(checksum).hex()
        sha = hashlib.sha256()
        with self._errors("GET", full):
            response = self._client.get_object(Bucket=self._bucket, Key=full)
            for chunk in response["Body"].iter_chunks():
                sha.update(chunk)
        return sha.hexdigest()

    # -- reading -------------------------------------------------------------------------

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        full = self._full(key)
        with self._errors("GET", full):
            response = self._client.get_object(Bucket=self._bucket, Key=full, ChecksumMode="ENABLED")
            size = int(response.get("ContentLength", 0))
            if max_bytes is not None and size > max_bytes:
                response["Body"].close()  # the length is in the headers: refuse before reading the body
                raise ObjectTooLarge(f"{self._where(full)} is {size} bytes, over the {max_bytes} limit", size)
            return response["Body"].read()

    def get_file(self, key: str, dest: Path) -> Path:
        full = self._full(key)
        dest = Path(dest)

        def write(fh: IO[bytes]) -> None:
            with self._errors("GET", full):
                response = self._client.get_object(Bucket=self._bucket, Key=full, ChecksumMode="ENABLED")
                for chunk in response["Body"].iter_chunks():
                    fh.write(chunk)

        with temporary_file(dest.parent, write) as tmp:
            tmp.replace(dest)
        return dest

    def exists(self, key: str) -> bool:
        return self._head(self._full(key)) is not None

    def size(self, key: str) -> int:
        full = self._full(key)
        head = self._head(full)
        if head is None:
            raise ObjectNotFoundError(f"no object at {self._where(full)}")
        return int(head["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """S3 lists in UTF-8 byte order, which is code-point order: the same as sorting the keys."""
        validate_prefix(prefix)
        full_prefix = f"{self._prefix}/{prefix}" if self._prefix else prefix
        strip = len(self._prefix) + 1 if self._prefix else 0
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors("LIST", full_prefix):
            for page in paginator.paginate(Bucket=self._bucket, Prefix=full_prefix):
                for entry in page.get("Contents", []):
                    key = entry["Key"][strip:]
                    try:
                        validate_key(key)
                    except StorageError:
                        continue  # a directory marker or a key written by another tool
                    yield ObjectInfo(key=key, size=int(entry["Size"]))

    # -- housekeeping and views ----------------------------------------------------------

    def delete(self, key: str) -> None:
        full = self._full(key)
        with self._errors("DELETE", full):
            self._client.delete_object(Bucket=self._bucket, Key=full)

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    def child(self, prefix: str) -> S3ObjectStore:
        sub = validate_key(prefix.strip("/"))
        store = S3ObjectStore(
            self._bucket, join_key(self._prefix, sub), endpoint_url=self._endpoint_url, client=self._client
        )
        store._conditional_writes = self._conditional_writes
        return store

    # -- plumbing ------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        return join_key(self._prefix, validate_key(key))

    def _where(self, full: str) -> str:
        return f"s3://{self._bucket}/{full}"

    def _head(self, full: str) -> dict[str, Any] | None:
        try:
            with self._errors("HEAD", full):
                return self._client.head_object(Bucket=self._bucket, Key=full, ChecksumMode="ENABLED")
        except ObjectNotFoundError:
            return None

    @contextmanager
    def _errors(self, operation: str, full: str) -> Iterator[None]:
        """Turn botocore errors into StorageErrors built only from safe parts."""
        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, operation, full) from None
        except BotoCoreError as exc:
            endpoint = redact_url(self._endpoint_url) if self._endpoint_url else "AWS"
            error = StorageUnavailable if isinstance(exc, _UNREACHABLE) else StorageError
            raise error(
                f"S3 {operation} {self._where(full)} failed: {type(exc).__name__} (endpoint {endpoint})"
            ) from None

    def _client_error(self, exc: ClientError, operation: str, full: str) -> StorageError:
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        logger.debug(
            "S3 %s %s: %s (HTTP %s, request id %s)",
            operation,
            self._where(full),
            code,
            status,
            exc.response.get("ResponseMetadata", {}).get("RequestId"),
        )
        if code in _NOT_FOUND:
            return ObjectNotFoundError(f"no object at {self._where(full)}")
        if code == "NoSuchBucket":
            return StorageError(f"S3 bucket {self._bucket!r} does not exist")
        hint = "; check the AWS credentials and their permissions" if status in (401, 403) else ""
        error = StorageUnavailable if isinstance(status, int) and status >= 500 else StorageError
        return error(f"S3 {operation} {self._where(full)} failed: {code} (HTTP {status}){hint}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))
