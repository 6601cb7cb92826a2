"""Check ``RETINA_HOME`` once, up front, so an unusable one is one clear line, not a traceback.

Every command writes below it (the SQLite catalog, Prefect's database, reports): a home
that is a file, cannot be created, or is read-only would otherwise fail deep inside
SQLite or Prefect with a message naming neither the path nor the setting.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


class HomeUnusable(Exception):
    """RETINA_HOME cannot be used; the message names the path and the problem."""


def prepare_home(home: Path) -> Path:
    """Create ``home`` when missing and prove it writable; raises HomeUnusable otherwise."""
    if home.exists() and not home.is_dir():
        raise HomeUnusable(f"RETINA_HOME {home} is a file, not a folder")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HomeUnusable(f"RETINA_HOME {home} cannot be created: {exc.strerror or exc}") from exc
    try:
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as exc:  # read-only mount, missing permission, full disk
        raise HomeUnusable(f"RETINA_HOME {home} is not writable: {exc.strerror or exc}") from exc
    return home
