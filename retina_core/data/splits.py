"""Patient-level, stable splits.

A patient's split is a pure function of a keyed hash of their id, so it never depends
on what else is in the catalog: new data never moves an existing image, two ingests
running at once agree, and a patient with files in both of a source's ``train`` and
``test`` folders still lands in exactly one split. The test split is therefore a fixed
benchmark across retrains. Stratification is not forced; it is checked afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Iterable

from retina_core.config import SplitSettings
from retina_core.domain import Split


def _keyed_digest(value: str, key: str) -> bytes:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).digest()


def patient_unit(patient_id: str, key: str) -> float:
    """Uniform number in [0, 1) derived from the patient id and the split key."""
    return int.from_bytes(_keyed_digest(patient_id, key)[:8], "big") / 2**64


def pseudonym(value: str, key: str) -> str:
    """The keyed hash that stands in for an identifier a clinic's files carry (a DICOM PatientID).

    Same HMAC and key as the splits, so the catalog can hold the pseudonym in place of the
    identifier and still give every file of one patient the same split; without the key the
    identifier cannot be recovered or confirmed by hashing guesses.
    """
    return _keyed_digest(value, key).hex()[:32]


def assign_split(patient_id: str, settings: SplitSettings) -> Split:
    u = patient_unit(patient_id, settings.key)
    if u < settings.test_fraction:
        return Split.TEST
    if u < settings.test_fraction + settings.val_fraction:
        return Split.VAL
    return Split.TRAIN


def split_balance(rows: Iterable[tuple[str, int | None]]) -> dict[str, dict[int, int]]:
    """Counts of (split, label) — what the ingest report and the model card show."""
    counts: dict[str, Counter[int]] = {s.value: Counter() for s in Split}
    for split, label in rows:
        if label is not None:
            counts[str(split)][int(label)] += 1
    return {split: dict(sorted(c.items())) for split, c in counts.items()}


def stratification_warnings(
    balance: dict[str, dict[int, int]], labels: Iterable[int], *, tolerance: float = 0.5
) -> list[str]:
    """Classes missing from a split, or whose share is far from their overall share."""
    labels = list(labels)
    total = Counter[int]()
    for per_split in balance.values():
        total.update(per_split)
    n_all = sum(total.values())
    warnings: list[str] = []
    if n_all == 0:
        return warnings
    for split, per_split in balance.items():
        n_split = sum(per_split.values())
        if n_split == 0:
            warnings.append(f"split {split!r} is empty")
            continue
        for label in labels:
            expected = total[label] / n_all
            got = per_split.get(label, 0) / n_split
            if total[label] and per_split.get(label, 0) == 0:
                warnings.append(f"class {label} is absent from split {split!r}")
            elif expected > 0 and abs(got - expected) / expected > tolerance:
                warnings.append(f"class {label} is {got:.1%} of split {split!r} but {expected:.1%} overall")
    return warnings
