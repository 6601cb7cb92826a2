"""The object store on a local directory.

It is also opened read-only over users' landing folders, which may hold symlinks that
point anywhere. Reads therefore open one path component at a time relative to the root
with ``O_NOFOLLOW`` and check the opened descriptor (``fstat``): a link anywhere below the
root is refused rather than followed, and a file swapped for a link between a check and
the read cannot redirect it, because there is no separate check. Listings yield links as
entries so that callers can record them (a reader then refuses them); they never enter a
linked folder. Writes resolve the path and check it against the root. Writes are published with ``os.link`` from a fsynced temporary: the link fails when
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
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from retina_core.storage.atomic import file_sha256, fsync_directory, temporary_file
from retina_core.storage.base import (
    TEMP_PREFIX,
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectTooLarge,
    StorageError,
    SymlinkRefused,
    UnsafeKeyError,
    validate_key,
    validate_prefix,
)

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV}
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
"""O_NONBLOCK: opening a FIFO planted in a landing folder must not hang the ingest."""


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

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        with self._open(key) as (fd, info):
            if max_bytes is not None and info.st_size > max_bytes:
                raise ObjectTooLarge(
                    f"{key!r} is {info.st_size} bytes, over the {max_bytes} limit", info.st_size
                )
            with os.fdopen(os.dup(fd), "rb") as fh:
                # read(n) allocates n bytes up front: ask for the size fstat gave (+1 to notice
                # growth), never for the limit itself.
                data = fh.read() if max_bytes is None else fh.read(min(info.st_size, max_bytes) + 1)
        if max_bytes is not None and len(data) > max_bytes:  # grew while being read
            raise ObjectTooLarge(f"{key!r} grew past the {max_bytes} limit while read", len(data))
        return data

    def get_file(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        with self._open(key) as (fd, _):

            def write(fh: BinaryIO) -> None:
                with os.fdopen(os.dup(fd), "rb") as src:
                    shutil.copyfileobj(src, fh, _CHUNK)

            with temporary_file(dest.parent, write) as tmp:
                os.replace(tmp, dest)
        return dest

    def exists(self, key: str) -> bool:
        """Whether a regular file is there; SymlinkRefused when the key is (or crosses) a link."""
        try:
            with self._open(key):
                return True
        except ObjectNotFoundError:
            return False

    def size(self, key: str) -> int:
        with self._open(key) as (_, info):
            return info.st_size

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
        """Every regular file and link under ``start``, without recursion or following links.

        An explicit stack instead of ``os.walk`` (recursive before Python 3.12), so a tree
        thousands of levels deep is listed like any other; a folder that cannot be read is
        logged and skipped, never the end of the listing.
        """
        root = str(self._root).rstrip(os.sep) + os.sep
        stack = [str(start)]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    found = list(entries)
            except OSError as exc:
                logger.warning("cannot list %r: %s", directory[len(root) :], exc.strerror or exc)
                continue
            for entry in found:
                if entry.name.startswith(TEMP_PREFIX):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed while listing
                key = entry.path[len(root) :].replace(os.sep, "/")
                if key.startswith(prefix) and (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                    try:
                        yield ObjectInfo(key=validate_key(key), size=info.st_size)
                    except UnsafeKeyError:
                        continue

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

    @contextmanager
    def _open(self, key: str) -> Iterator[tuple[int, os.stat_result]]:
        """A descriptor on the regular file at ``key`` and its ``fstat``, reached without links.

        Each folder is opened relative to the previous one with ``O_NOFOLLOW``, so neither
        a linked file nor a linked folder (swapped in at any moment) is ever followed.
        """
        parts = validate_key(key).split("/")
        try:
            fd = os.open(self._root, os.O_RDONLY | _CLOEXEC)
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no object {key!r}: {self._root} does not exist yet") from None
        except OSError as exc:
            raise StorageError(f"cannot open the store root {self._root}: {exc.strerror or exc}") from exc
        try:
            for part in parts[:-1]:
                fd_next = self._open_at(fd, part, _DIR_FLAGS, key)
                os.close(fd)
                fd = fd_next
            file_fd = self._open_at(fd, parts[-1], _FILE_FLAGS, key)
        finally:
            os.close(fd)
        try:
            info = os.fstat(file_fd)
            if not stat.S_ISREG(info.st_mode):
                raise ObjectNotFoundError(f"{key!r} in {self._root} is not a regular file")
            yield file_fd, info
        finally:
            os.close(file_fd)

    def _open_at(self, dir_fd: int, name: str, flags: int, key: str) -> int:
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK) and _is_link(name, dir_fd):
                raise SymlinkRefused(f"{key!r} is, or passes through, a symbolic link") from None
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
                raise ObjectNotFoundError(f"no object {key!r} in {self._root}") from None
            raise StorageError(f"cannot open {key!r} in {self._root}: {exc.strerror or exc}") from exc


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
