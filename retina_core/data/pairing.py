"""Fusion pairs: which fundus photo goes with which OCT scan (pure functions, seeded).

The public datasets hold different patients, so fusion normally trains on *virtual*
pairs: a fundus photo and an OCT scan drawn with the same binary screening label, within
the same split (so no image crosses from train into test through a pair). A pairs manifest
gives *real* same-eye pairs instead. The *shuffled* control breaks the pairing on purpose:
if a fusion head does as well on shuffled pairs, its gain came from capacity or leakage,
not from combining two views of the same eye.

Bootstrap unit (``Pair.patient_id``): for real pairs, the patient (both eyes of a patient
are correlated). For virtual pairs, the OCT patient: an OCT patient contributes several
scans and each scan is reused in about ``pairs_per_image`` pairs, the largest correlated
cluster in a virtual cohort. APTOS fundus photos are one per patient and also reused about
``pairs_per_image`` times; that smaller correlation is not captured (a crossed bootstrap
would be needed), so virtual-pair intervals are somewhat narrower than they should be.
Shuffled pairs keep the unit of the pair they were made from, so a control row resamples
the same cases as the rows it is compared with.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from retina_core.data.records import ImageRecord
from retina_core.domain import Modality, Split, is_disease

logger = logging.getLogger(__name__)

PairKind = Literal["virtual", "real", "shuffled"]


@dataclass(frozen=True)
class Pair:
    fundus_sha: str
    oct_sha: str
    label01: int
    """1 = disease in either modality (real pairs); the shared label (virtual pairs)."""
    split: Split
    patient_id: str
    """The bootstrap unit; see the module docstring."""
    fundus_patient: str
    oct_patient: str
    kind: PairKind


def _stratum_seed(seed: int, split: Split, label01: int) -> int:
    """A seed per (split, label) that does not depend on which strata exist or their order."""
    return zlib.crc32(f"{seed}:{split.value}:{label01}".encode())


def _cycled(rng: np.random.Generator, items: Sequence[ImageRecord], n: int) -> list[ImageRecord]:
    """``n`` draws that use every item once per pass, each pass in a fresh random order."""
    out: list[ImageRecord] = []
    while len(out) < n:
        out.extend(items[i] for i in rng.permutation(len(items)))
    return out[:n]


def _by_stratum(items: Sequence[ImageRecord]) -> dict[tuple[Split, int], list[ImageRecord]]:
    strata: dict[tuple[Split, int], list[ImageRecord]] = {}
    for r in sorted(items, key=lambda r: r.sha256):
        if r.label < 0:
            continue
        strata.setdefault((r.split, int(is_disease(r.modality, r.label))), []).append(r)
    return strata


def _stratum_pairs(
    rng: np.random.Generator, fundus: list[ImageRecord], octs: list[ImageRecord], per_image: int
) -> list[tuple[ImageRecord, ImageRecord]]:
    """Distinct (fundus, oct) combinations: the larger side ``per_image`` times each, the smaller evenly."""
    fundus_is_big = len(fundus) >= len(octs)
    big, small = (fundus, octs) if fundus_is_big else (octs, fundus)
    n = min(per_image, len(small)) * len(big)
    pool = _cycled(rng, small, n)
    partners: dict[str, set[str]] = {}
    out = []
    for b in _cycled(rng, big, n):
        taken = partners.setdefault(b.sha256, set())
        j = next((j for j, s in enumerate(pool) if s.sha256 not in taken), None)
        if j is None:  # what is left in the pool is already paired with b: any other partner will do
            others = [s for s in small if s.sha256 not in taken]
            partner = others[int(rng.integers(len(others)))]
        else:
            partner = pool.pop(j)
        taken.add(partner.sha256)
        out.append((b, partner) if fundus_is_big else (partner, b))
    return out


def virtual_pairs(
    fundus_items: Sequence[ImageRecord], oct_items: Sequence[ImageRecord], pairs_per_image: int, seed: int
) -> list[Pair]:
    """Fundus and OCT images with the same binary label and split, paired at random (seeded).

    Per (split, label) stratum every image of the larger side is used exactly
    ``pairs_per_image`` times (fewer only when the smaller side has fewer images than that),
    and the smaller side cycles through its images evenly, so it is reused more often; no
    image is left out and no (fundus, oct) combination repeats. The result does not depend
    on the input order; a stratum with images of one modality only gives no pairs (logged).
    """
    if pairs_per_image < 1:
        raise ValueError(f"pairs_per_image must be >= 1, got {pairs_per_image}")
    fundus, octs = _by_stratum(fundus_items), _by_stratum(oct_items)
    pairs: list[Pair] = []
    for split in Split:
        for label in (0, 1):
            f, o = fundus.get((split, label), []), octs.get((split, label), [])
            if not f or not o:
                if f or o:
                    logger.warning(
                        "no virtual pairs for %s label %d: %d fundus, %d OCT images",
                        split,
                        label,
                        len(f),
                        len(o),
                    )
                continue
            rng = np.random.default_rng(_stratum_seed(seed, split, label))
            pairs.extend(
                Pair(
                    fundus_sha=fr.sha256,
                    oct_sha=orr.sha256,
                    label01=label,
                    split=split,
                    patient_id=f"oct:{orr.patient_id}",
                    fundus_patient=fr.patient_id,
                    oct_patient=orr.patient_id,
                    kind="virtual",
                )
                for fr, orr in _stratum_pairs(rng, f, o, pairs_per_image)
            )
    return pairs


def real_pairs(
    pair_rows: Sequence[Mapping[str, Any]],
    fundus_items: Sequence[ImageRecord],
    oct_items: Sequence[ImageRecord],
) -> list[Pair]:
    """Same-eye pairs from the catalog (``repository.pair_rows``), labelled from their images.

    The eye is diseased when either image's label says so; when one image is unlabelled the
    pair is kept only if the other shows disease (a normal label on one side says nothing
    about the other), otherwise it is skipped.
    """
    labels: dict[str, tuple[Modality, int]] = {
        r.sha256: (r.modality, r.label) for r in [*fundus_items, *oct_items] if r.label >= 0
    }
    pairs: list[Pair] = []
    skipped = 0
    for row in pair_rows:
        states = [is_disease(*labels[sha]) if sha in labels else None for sha in (row["fundus"], row["oct"])]
        if any(states):
            label = 1
        elif all(s is False for s in states):
            label = 0
        else:
            skipped += 1
            continue
        pairs.append(
            Pair(
                fundus_sha=row["fundus"],
                oct_sha=row["oct"],
                label01=label,
                split=Split(row["split"]),
                patient_id=f"patient:{row['patient_id']}",
                fundus_patient=str(row["patient_id"]),
                oct_patient=str(row["patient_id"]),
                kind="real",
            )
        )
    if skipped:
        logger.warning("skipped %d real pairs whose label cannot be known (an image is unlabelled)", skipped)
    return pairs


def shuffled_pairs(pairs: Sequence[Pair], seed: int) -> list[Pair]:
    """The control: each fundus keeps its label but gets a random OCT (any label) from its split.

    The OCT column is permuted within each split, so every OCT image is used as often as
    before and no image crosses splits; only the link between the two views is broken.
    """
    out: list[Pair] = []
    for split in Split:
        rows = [p for p in pairs if p.split is split]
        if not rows:
            continue
        rng = np.random.default_rng(_stratum_seed(seed, split, 2))
        donors = [rows[i] for i in rng.permutation(len(rows))]
        out.extend(
            replace(p, oct_sha=d.oct_sha, oct_patient=d.oct_patient, kind="shuffled")
            for p, d in zip(rows, donors, strict=True)
        )
    return out


def pair_counts(pairs: Sequence[Pair]) -> dict[str, dict[str, int]]:
    """Per split: pairs, diseased pairs, distinct images of each modality and bootstrap units."""
    out: dict[str, dict[str, int]] = {}
    for split in Split:
        rows = [p for p in pairs if p.split is split]
        out[split.value] = {
            "pairs": len(rows),
            "diseased": sum(p.label01 for p in rows),
            "fundus_images": len({p.fundus_sha for p in rows}),
            "oct_images": len({p.oct_sha for p in rows}),
            "units": len({p.patient_id for p in rows}),
        }
    return out
