"""From catalog records to in-memory split arrays, through the preprocessed cache."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from retina_core.config import ModalityTrainSettings
from retina_core.data.image_cache import PreprocessedCache
from retina_core.data.preprocess import Preprocessing
from retina_core.data.records import ImageRecord
from retina_core.domain import Modality, Split
from retina_core.training.loop import SplitArrays

log = logging.getLogger(__name__)


def preprocessing_for(modality: Modality, settings: ModalityTrainSettings) -> Preprocessing:
    """How these training settings prepare images: the cache training reads, and what the
    trained model's spec records (``create_model`` derives it from the same two settings)."""
    return Preprocessing.for_modality(modality, settings.image_size, ben_graham=settings.ben_graham)


def hold_out_paired(records: Sequence[ImageRecord], paired: set[str]) -> list[ImageRecord]:
    """``records`` without the training-split images of the paired cohort (by SHA-256).

    A fusion head trained on embeddings of images its encoder was fitted on sees them
    near-perfectly separated in each modality, learns to trust both views equally and
    never learns which one to believe when they disagree. Validation and test images are
    kept: they are held out from the encoder either way.
    """
    return [r for r in records if not (r.split is Split.TRAIN and r.sha256 in paired)]


def cap_records(records: Sequence[ImageRecord], cap: int | None, seed: int) -> list[ImageRecord]:
    """A seeded, patient-preserving subset for quick runs (whole patients are kept or dropped)."""
    if cap is None or len(records) <= cap:
        return list(records)
    patients = sorted({r.patient_id for r in records})
    order = np.random.default_rng(seed).permutation(len(patients))
    keep: set[str] = set()
    count = 0
    per_patient: dict[str, int] = {}
    for r in records:
        per_patient[r.patient_id] = per_patient.get(r.patient_id, 0) + 1
    for i in order:
        if count >= cap:
            break
        keep.add(patients[i])
        count += per_patient[patients[i]]
    return [r for r in records if r.patient_id in keep]


def split_arrays(cache: PreprocessedCache, records: Sequence[ImageRecord]) -> dict[Split, SplitArrays]:
    out: dict[Split, SplitArrays] = {}
    for split in Split:
        rows = [r for r in records if r.split is split]
        shas = [r.sha256 for r in rows]
        out[split] = SplitArrays(
            images=cache.load_many(shas, workers=2) if rows else np.zeros((0, *cache.shape), dtype=np.uint8),
            labels=np.array([r.label for r in rows], dtype=np.int64),
            patient_ids=np.array([r.patient_id for r in rows], dtype=object),
            shas=shas,
        )
    return out
