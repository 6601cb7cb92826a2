"""Open a landing location (local folder, manifest file or ``s3://`` prefix) read-only."""

from __future__ import annotations

from pathlib import Path

from retina_core.config import Settings
from retina_core.data.rejections import SourceError
from retina_core.domain import Source
from retina_core.storage import LocalObjectStore, ObjectStore, open_store


def open_landing(location: str, source: Source, settings: Settings) -> tuple[ObjectStore, str | None]:
    """The landing store, plus the manifest key for a pairs source given as a file.

    Raises SourceError when the location itself is unusable: that is the one case the
    CLI reports with exit code 2 instead of quarantining.
    """
    manifest: str | None = None
    if location.startswith("s3://"):
        if source is Source.PAIRS and location.endswith(".csv"):
            location, manifest = location.rsplit("/", 1)
        return open_store(location, s3_endpoint_url=settings.s3_endpoint_url), manifest
    path = Path(location.removeprefix("file://")).expanduser()
    if source is Source.PAIRS and path.is_file():
        path, manifest = path.parent, path.name
    if not path.exists():
        raise SourceError(f"{location} does not exist")
    if not path.is_dir():
        raise SourceError(f"{location} is not a folder")
    return LocalObjectStore(path.resolve()), manifest
