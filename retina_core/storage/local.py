"""The object store on a local directory.

It is also opened read-only over users' landing folders, which may hold symlinks that
point anywhere, so every path is resolved and checked against the root before use.
Writes are published with ``os.link`` from a fsynced temporary: the link fails when
the final name exists, so two processes racing on one key cannot clobber each other.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from retina_core.storage.atomic import file_sha256, fsync_directory, temporary_file
from retina_core.storage.base import (
    TEMP_PREFIX,
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    StorageError,
    UnsafeKeyError,
    validate_key,
    validate_prefix,
)

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV}


class LocalObjectStore:
    """Objects are files under ``root``; the key is the relative path."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).expanduser().absolute().resolve()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self._root)!r})"

    @property
    def root(self) -> Path:
        return self._root

    @property
    def url(self) -> str:
        return self._root.as_uri()

    # -- writing -------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        def write(fh: BinaryIO) -> None:
            fh.write(data)

        return self._put(key, hashlib.sha256(data).digest(), len(data), write, overwrite)

    def put_file(self, key: str, path: Path, *, overwrite: bool = False) -> bool:
        source = Path(path)

        def write(fh: BinaryIO) -> None:
            with source.open("rb") as src:
                shutil.copyfileobj(src, fh, _CHUNK)

        return self._put(key, file_sha256(source), source.stat().st_size, write, overwrite)

    def _put(
        self, key: str, digest: bytes, size: int, write: Callable[[BinaryIO], None], overwrite: bool
    ) -> bool:
        path = self._path(key)
        # Checking first spares the temporary and its fsync when re-ingesting known data.
        if self._holds(path, key, digest, size, overwrite):
            return False
        try:
            with temporary_file(path.parent, write) as tmp:
                if not self._inside(path.parent):  # a symlink swapped in since the check above
                    raise UnsafeKeyError(f"key {key!r} resolves outside the store root")
                published = self._publish(tmp, path, overwrite)
        except OSError as exc:
            raise StorageError(f"cannot write {key!r} under {self._root}: {exc.strerror or exc}") from exc
        if published:
            fsync_directory(path.parent)
            logger.debug("stored %s (%d bytes)", key, size)
            return True
        # Another writer published first: fine if it wrote the same bytes.
        self._holds(path, key, digest, size, overwrite=False)
        return False

    @staticmethod
    def _publish(tmp: Path, path: Path, overwrite: bool) -> bool:
        """Move the temporary into place; False when another object got there first."""
        if overwrite:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
        logger.warning("%s has no hard links; falling back to a check-then-rename publish", path.parent)
        if os.path.lexists(path):
            return False
        os.replace(tmp, path)
        return True

    def _holds(self, path: Path, key: str, digest: bytes, size: int, overwrite: bool) -> bool:
        """True when ``path`` already holds exactly these bytes.

        Raises ObjectExistsError when it holds something else and overwriting was not asked for.
        """
        if not os.path.lexists(path):
            return False
        if not path.is_file():
            raise ObjectExistsError(f"{key!r} exists and is not a regular file")
        if path.stat().st_size == size and file_sha256(path) == digest:
            return True
        if overwrite:
            return False
        raise ObjectExistsError(f"a different object already exists at {key!r}")

    # -- reading -------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        return self._existing(key).read_bytes()

    def get_file(self, key: str, dest: Path) -> Path:
        source = self._existing(key)
        dest = Path(dest)

        def write(fh: BinaryIO) -> None:
            with source.open("rb") as src:
                shutil.copyfileobj(src, fh, _CHUNK)

        with temporary_file(dest.parent, write) as tmp:
            os.replace(tmp, dest)
        return dest

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._existing(key).stat().st_size

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        directory = prefix.rpartition("/")[0]
        start = self._root / directory
        if not self._inside(start):
            logger.warning("not listing %r: it resolves outside %s", directory, self._root)
            return iter(())
        if not start.is_dir():
            return iter(())
        return iter(sorted(self._walk(start, prefix), key=lambda info: info.key))

    def _walk(self, start: Path, prefix: str) -> Iterator[ObjectInfo]:
        # followlinks=False: a symlinked directory is listed in dirnames but never entered.
        for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
            dirnames[:] = [name for name in dirnames if not name.startswith(TEMP_PREFIX)]
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    continue
                path = Path(dirpath, name)
                key = path.relative_to(self._root).as_posix()
                if not key.startswith(prefix):
                    continue
                info = self._info(path, key)
                if info is not None:
                    yield info

    def _info(self, path: Path, key: str) -> ObjectInfo | None:
        """Listing entry for a file, or None for what a reader could not (or must not) open."""
        try:
            validate_key(key)
        except UnsafeKeyError:
            return None
        if path.is_symlink() and not self._inside(path):
            logger.warning("skipping %s: symlink pointing outside %s", key, self._root)
            return None
        try:
            info = path.stat()
        except OSError:
            return None  # dangling symlink, or removed while listing
        if not stat.S_ISREG(info.st_mode):
            return None
        return ObjectInfo(key=key, size=info.st_size)

    # -- housekeeping and views ----------------------------------------------------------

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r} under {self._root}: {exc.strerror or exc}") from exc

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def child(self, prefix: str) -> LocalObjectStore:
        return LocalObjectStore(self._path(prefix.rstrip("/")))

    # -- paths ---------------------------------------------------------------------------

    def _inside(self, path: Path) -> bool:
        real = os.path.realpath(path)
        root = str(self._root)
        return real == root or real.startswith(root.rstrip(os.sep) + os.sep)

    def _path(self, key: str) -> Path:
        path = self._root / validate_key(key)
        if not self._inside(path):
            raise UnsafeKeyError(f"key {key!r} resolves outside the store root through a symlink")
        return path

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {key!r} in {self._root}")
        return path
