"""The training/evaluation view of catalog rows, free of torch so the catalog can import it."""

from __future__ import annotations

from dataclasses import dataclass

from retina_core.domain import Modality, Split


@dataclass(frozen=True)
class ImageRecord:
    """The training/evaluation view of one catalog row."""

    sha256: str
    modality: Modality
    label: int
    patient_id: str
    split: Split
    object_key: str
    """Where the original bytes live in the object store (``images/{modality}/{sha256}.{ext}``)."""
    volume_id: str | None = None
    """The OCT volume (one eye, one visit) a B-scan came from, when a DICOM file said so."""
    frame_index: int | None = None
