"""Temporary files that become real files in one step, so no reader ever sees half a file.

A crash leaves at worst a hidden ``.tmp-…`` file that listings skip, never a truncated
object under its final name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from retina_core.storage.base import TEMP_PREFIX


def process_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``); the
    ``os.umask`` round trip elsewhere briefly sets it for every thread."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """What ``open()`` would give a new file: 0666 less the umask (mkstemp forces 0600).

    Objects are meant to be read by other users' workers when the operator's umask says
    so, and kept private when it does not (a ``027`` umask for patient data is honoured).
    """
    return 0o666 & ~process_umask()


@contextmanager
def temporary_file(directory: Path, write: Callable[[BinaryIO], None]) -> Iterator[Path]:
    """Write and fsync a hidden temporary in ``directory`` and yield its path.

    It lives in the destination directory so that the final link or rename stays on one
    filesystem (and is therefore atomic). Whatever is still at the path on exit is
    removed: the caller moves or hard-links it into place first.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(path, file_mode())
        yield path
    finally:
        path.unlink(missing_ok=True)


def fsync_directory(directory: Path) -> None:
    """Persist a new directory entry; without it a power cut can forget a finished rename."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and all of Windows) cannot fsync a directory
    finally:
        os.close(fd)


def file_sha256(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").digest()
