"""Catalog tables.

The catalog is the system of record for *what* exists; the object store holds the
bytes. Rows are only committed after their object exists (see ``ingest``), and no row
is ever updated in a way that loses history: quarantine and registry events are
append-only, model versions are immutable apart from their status.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from retina_core.domain import MAX_PATIENT_ID


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class ImageRow(Base):
    """One curated image, identified by the SHA-256 of its bytes."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    modality: Mapped[str] = mapped_column(String(16), index=True)
    source: Mapped[str] = mapped_column(String(16))
    source_path: Mapped[str] = mapped_column(Text, doc="Path of the first file seen with these bytes.")
    patient_id: Mapped[str] = mapped_column(String(MAX_PATIENT_ID), index=True)
    eye: Mapped[str | None] = mapped_column(String(8))
    label: Mapped[int | None] = mapped_column(Integer, doc="DRGrade or OctClass value; None = unlabeled.")
    split: Mapped[str] = mapped_column(String(8), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))
    object_key: Mapped[str] = mapped_column(Text)
    dataset_version: Mapped[int | None] = mapped_column(Integer, doc="First dataset version holding it.")
    volume_id: Mapped[str | None] = mapped_column(
        String(64), index=True, doc="Keyed hash of the OCT volume (DICOM instance) this B-scan belongs to."
    )
    frame_index: Mapped[int | None] = mapped_column(Integer, doc="Frame of the volume, from 0.")
    acquired_on: Mapped[str | None] = mapped_column(String(10), doc="Acquisition date, YYYY-MM-DD.")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PairRow(Base):
    """A same-eye fundus/OCT pair from a pairs manifest (real pairs, as opposed to the virtual
    pairs drawn from two single-modality sets)."""

    __tablename__ = "pairs"
    __table_args__ = (UniqueConstraint("fundus_sha256", "oct_sha256", name="uq_pair_images"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(String(MAX_PATIENT_ID), index=True)
    eye: Mapped[str] = mapped_column(String(8))
    fundus_sha256: Mapped[str] = mapped_column(ForeignKey("images.sha256"))
    oct_sha256: Mapped[str] = mapped_column(ForeignKey("images.sha256"))
    split: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class QuarantineRow(Base):
    """A rejected input and why; the file itself is kept under ``quarantine/``."""

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_source_path", "source", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ingest_run_id: Mapped[int | None] = mapped_column(ForeignKey("ingest_runs.id"))
    source: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32), doc="Stable machine-readable code.")
    detail: Mapped[str] = mapped_column(Text, doc="Human-readable explanation.")
    sha256: Mapped[str | None] = mapped_column(String(64))
    object_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IngestRunRow(Base):
    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(Text)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dataset_version: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DatasetVersionRow(Base):
    """A snapshot identity of the curated set; a new one only when the content changed."""

    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    new_images: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersionRow(Base):
    """A registered model version. Weights are immutable; only ``status`` ever changes."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_model_version"),
        UniqueConstraint("name", "run_key", name="uq_model_run_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    run_key: Mapped[str] = mapped_column(
        String(64), doc="Hash of the inputs (config, data version, parents): same inputs, same version."
    )
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    object_prefix: Mapped[str] = mapped_column(Text)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    primary_metric: Mapped[str] = mapped_column(String(32))
    primary_value: Mapped[float | None] = mapped_column()
    primary_low: Mapped[float | None] = mapped_column()
    primary_high: Mapped[float | None] = mapped_column()
    data_version: Mapped[int | None] = mapped_column(Integer)
    parents: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RegistryEventRow(Base):
    """Append-only history of registry decisions: register, promote, keep, rollback."""

    __tablename__ = "registry_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EmbeddingShardRow(Base):
    """Index of the content-addressed embedding cache: which shard holds which image."""

    __tablename__ = "embedding_entries"
    __table_args__ = (UniqueConstraint("cache_key", "sha256", name="uq_embedding_entry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cache_key: Mapped[str] = mapped_column(String(64), index=True, doc="Encoder + preprocessing fingerprint.")
    sha256: Mapped[str] = mapped_column(String(64))
    shard_key: Mapped[str] = mapped_column(Text)
    row: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EmbeddingShardFileRow(Base):
    """One embedding shard object and the checksum it was written with.

    The checksum is what lets a reader refuse a shard that was truncated or altered after it
    was written, instead of training on it: object stores promise atomic writes, not that the
    bytes stay intact forever (a partial copy, a disk error, a hand edit).
    """

    __tablename__ = "embedding_shards"

    shard_key: Mapped[str] = mapped_column(String(256), primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(64), index=True)
    n: Mapped[int] = mapped_column(Integer, doc="Embeddings (rows) in the shard.")
    dim: Mapped[int] = mapped_column(Integer, doc="Width of each embedding.")
    sha256: Mapped[str] = mapped_column(String(64), doc="SHA-256 of the shard's bytes.")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
