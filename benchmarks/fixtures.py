"""The data every benchmark needs, built once per run in a temporary folder and shared.

Everything is seeded synthetic data (no downloads). Three things are built lazily, only
when a benchmark asks for them:

- ``full_size``: APTOS-layout fundus photos at ~2000 px, the size real originals come in,
  for the rows about decoding (preprocessing cache, ingestion);
- ``originals``: a home with those photos ingested (their bytes in a curated store);
- ``workspace``: a home with a small data set ingested and both encoders trained, plus
  an increment of ~10% new images; the embedding rows start from copies of it.

Homes are copied with SQLite's backup API (the catalog runs in WAL mode, so copying the
file alone could miss committed pages) and a plain copy of the store.

The library's heavier modules (catalog, pipeline, image synthesis) are imported where
data are built, not at import time, so the harness alone starts in a moment (the smoke
test runs it on trivial benchmarks).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from retina_core.config import Settings, quick_preset
from retina_core.domain import Modality, Source

log = logging.getLogger(__name__)
T = TypeVar("T")
CATALOG_FILE = "catalog.db"


@dataclass(frozen=True)
class Scale:
    """How big the shared data are; one for `make bench`, one for `make bench QUICK=1`."""

    full_size_images: int
    full_size_px: int
    workspace_fundus: int
    workspace_oct: int
    workspace_pairs: int
    workspace_source_px: int
    workspace_image_size: int
    increment: float = 0.10
    """The incremental-retrain row adds this fraction of new images per modality."""


FULL = Scale(
    full_size_images=48,
    full_size_px=2000,
    workspace_fundus=200,
    workspace_oct=200,
    workspace_pairs=80,
    workspace_source_px=256,
    workspace_image_size=128,
)
QUICK = Scale(
    full_size_images=12,
    full_size_px=2000,
    workspace_fundus=40,
    workspace_oct=40,
    workspace_pairs=40,
    workspace_source_px=96,
    workspace_image_size=64,
)


def bench_settings(
    home: Path, *, image_size: int, epochs: int = 1, batch_size: int | None = None
) -> Settings:
    """The quick preset at ``image_size``, one epoch; locations derived from ``home`` only.

    Storage and database URLs are passed as None so a ``RETINA_STORAGE_URL`` or
    ``RETINA_DATABASE_URL`` in the caller's environment can never point a benchmark at
    real data.
    """
    base = quick_preset(Settings(home=home, storage_url=None, database_url=None, s3_endpoint_url=None))
    data = base.model_dump()
    for modality in ("fundus", "oct"):
        data["train"][modality].update(epochs=epochs, image_size=image_size)
        if batch_size is not None:
            data["train"][modality].update(batch_size=batch_size)
    return Settings.model_validate(data)


def with_home(settings: Settings, home: Path) -> Settings:
    """The same settings over another home (locations re-derived from it)."""
    data = settings.model_dump()
    data.update(home=home, storage_url=None, database_url=None)
    return Settings.model_validate(data)


def copy_home(src: Path, dst: Path) -> Path:
    """A consistent copy of a home: the store and files as they are, the catalog via SQLite backup."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(f"{CATALOG_FILE}*"))
    source = sqlite3.connect(src / CATALOG_FILE)
    target = sqlite3.connect(dst / CATALOG_FILE)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    return dst


def ingest_synthetic(settings: Settings, data: Path) -> None:
    """Ingest whatever ``write_synthetic`` wrote under ``data`` (APTOS, Kermany, pairs)."""
    from retina_core import verbs

    for source, location in (
        (Source.APTOS, "aptos"),
        (Source.KERMANY, "kermany"),
        (Source.PAIRS, "pairs.csv"),
    ):
        if (data / location).exists():
            verbs.ingest(settings, source, str(data / location))


def write_data(out: Path, **spec: int | None) -> Path:
    """Seeded synthetic data in the real on-disk layouts (see ``retina synth``)."""
    from retina_core.data.synthetic import SynthSpec, write_synthetic

    write_synthetic(out, SynthSpec(**spec))
    return out


@dataclass(frozen=True)
class Workspace:
    """A trained home and the increment's landing folder; use copies, never the home itself."""

    settings: Settings
    """Settings of the trained home (both encoders registered, no embeddings yet)."""
    increment: Path
    """Synthetic data of ~10% new images per modality, not yet ingested."""
    images: dict[str, int]
    """Images per modality in the trained home."""
    build_seconds: float


def build_workspace(root: Path, home: Path, scale: Scale) -> Workspace:
    """Ingest a small data set, train both encoders on it, and write the increment beside it."""
    from retina_core import verbs
    from retina_core.catalog.repository import image_records

    started = time.perf_counter()
    data = write_data(
        root / "workspace-data",
        fundus=scale.workspace_fundus,
        oct=scale.workspace_oct,
        pairs=scale.workspace_pairs,
        size=scale.workspace_source_px,
        seed=3,
    )
    settings = bench_settings(home, image_size=scale.workspace_image_size)
    ingest_synthetic(settings, data)
    for modality in (Modality.FUNDUS, Modality.OCT):
        verbs.train(settings, modality)
    engine = verbs.catalog_engine(settings)
    images = {m.value: len(image_records(engine, m, labeled_only=False)) for m in Modality}
    increment = write_data(
        root / "increment-data",
        fundus=max(1, round(images["fundus"] * scale.increment)),
        oct=max(1, round(images["oct"] * scale.increment)),
        size=scale.workspace_source_px,
        seed=4,
    )
    return Workspace(settings, increment, images, time.perf_counter() - started)


class BenchContext:
    """What one `make bench` run shares: its temporary root, its scale and the built data."""

    def __init__(self, root: Path, *, quick: bool) -> None:
        self.root = Path(root)
        self.quick = quick
        self.scale = QUICK if quick else FULL

    def pick(self, full: T, quick: T) -> T:
        return quick if self.quick else full

    def new_dir(self, name: str) -> Path:
        """A fresh, empty folder under the run's root (one per repetition where that matters)."""
        path = self.root / f"{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    @cached_property
    def full_size(self) -> Path:
        """APTOS-layout folder of full-size fundus photos (PNG, as APTOS ships them)."""
        scale = self.scale
        data = write_data(
            self.root / "full-size", fundus=scale.full_size_images, oct=0, size=scale.full_size_px, seed=11
        )
        return data / "aptos"

    @cached_property
    def originals(self) -> Settings:
        """A home with the full-size photos ingested; its curated store holds their bytes.

        Its training settings are the defaults' (128 px, batch 32; batch 8 in quick mode).
        """
        settings = bench_settings(self.new_dir("originals-home"), image_size=128, batch_size=self.pick(32, 8))
        ingest_synthetic(settings, self.full_size.parent)
        return settings

    @cached_property
    def workspace(self) -> Workspace:
        return build_workspace(self.root, self.new_dir("workspace-home"), self.scale)

    def workspace_copy(self, name: str) -> Settings:
        """Settings over a fresh copy of the trained workspace home."""
        ws = self.workspace
        home = copy_home(ws.settings.home, self.root / f"{name}-{uuid.uuid4().hex[:8]}")
        return with_home(ws.settings, home)
