"""Fusion pairing: virtual pairs agree on label and split, are seeded, and use every image."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from retina_core.data.pairing import pair_counts, real_pairs, shuffled_pairs, virtual_pairs
from retina_core.data.records import ImageRecord
from retina_core.domain import DRGrade, Modality, OctClass, Split, is_disease


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def records(modality: Modality, n: int, seed: int) -> list[ImageRecord]:
    rng = random.Random(seed)
    labels = list(DRGrade) if modality is Modality.FUNDUS else list(OctClass)
    out = []
    for i in range(n):
        patient = f"{modality.value}-p{i // 2}"  # two images per patient
        split = [Split.TRAIN, Split.TRAIN, Split.VAL, Split.TEST][int(sha(patient), 16) % 4]
        out.append(
            ImageRecord(
                sha256=sha(f"{modality}-{i}"),
                modality=modality,
                label=int(rng.choice(labels)),
                patient_id=patient,
                split=split,
                object_key=f"images/{modality}/{i}",
            )
        )
    return out


FUNDUS = records(Modality.FUNDUS, 60, seed=1)
OCT = records(Modality.OCT, 90, seed=2)
BY_SHA = {r.sha256: r for r in [*FUNDUS, *OCT]}


def test_virtual_pairs_share_binary_label_and_split() -> None:
    pairs = virtual_pairs(FUNDUS, OCT, pairs_per_image=2, seed=0)
    assert pairs
    for p in pairs:
        f, o = BY_SHA[p.fundus_sha], BY_SHA[p.oct_sha]
        assert f.modality is Modality.FUNDUS and o.modality is Modality.OCT
        assert is_disease(f.modality, f.label) == is_disease(o.modality, o.label) == bool(p.label01)
        assert f.split is o.split is p.split
        assert p.kind == "virtual" and p.patient_id == f"oct:{o.patient_id}"
    assert len({(p.fundus_sha, p.oct_sha) for p in pairs}) == len(pairs)


def test_virtual_pairs_are_seeded_and_order_independent() -> None:
    first = virtual_pairs(FUNDUS, OCT, pairs_per_image=2, seed=7)
    shuffled_inputs = virtual_pairs(random.Random(3).sample(FUNDUS, len(FUNDUS)), OCT[::-1], 2, seed=7)
    assert first == shuffled_inputs
    assert first != virtual_pairs(FUNDUS, OCT, pairs_per_image=2, seed=8)


@pytest.mark.parametrize("per_image", [1, 3])
def test_every_image_is_used_about_pairs_per_image_times(per_image: int) -> None:
    pairs = virtual_pairs(FUNDUS, OCT, pairs_per_image=per_image, seed=0)
    uses = Counter([p.fundus_sha for p in pairs] + [p.oct_sha for p in pairs])
    for split in Split:
        for label in (0, 1):
            f = [r for r in FUNDUS if r.split is split and int(is_disease(r.modality, r.label)) == label]
            o = [r for r in OCT if r.split is split and int(is_disease(r.modality, r.label)) == label]
            if not f or not o:
                assert not any(uses[r.sha256] for r in f + o)
                continue
            larger, smaller = (f, o) if len(f) >= len(o) else (o, f)
            expected = min(per_image, len(smaller))
            assert all(uses[r.sha256] == expected for r in larger)
            counts = [uses[r.sha256] for r in smaller]  # cycled evenly, every image used
            assert min(counts) >= expected and max(counts) - min(counts) <= 1


def test_real_pairs_label_is_disease_in_either_modality() -> None:
    fundus = [r for r in FUNDUS if r.split is Split.TRAIN][:4]
    octs = [r for r in OCT if r.split is Split.TRAIN][:4]
    rows = [
        {"patient_id": f"P{i}", "eye": "OD", "fundus": f.sha256, "oct": o.sha256, "split": "train"}
        for i, (f, o) in enumerate(zip(fundus, octs, strict=True))
    ]
    pairs = real_pairs(rows, fundus, octs)
    for i, (p, f, o) in enumerate(zip(pairs, fundus, octs, strict=True)):
        assert p.label01 == int(is_disease(f.modality, f.label) or is_disease(o.modality, o.label))
        assert p.kind == "real" and p.patient_id == f"patient:P{i}"  # the unit is the patient
    unlabelled = [
        *rows,
        {"patient_id": "X", "eye": "OS", "fundus": sha("new"), "oct": octs[0].sha256, "split": "test"},
    ]
    kept = real_pairs(unlabelled, fundus, octs)
    assert len(kept) == len(pairs) + int(is_disease(Modality.OCT, octs[0].label))


def test_shuffled_control_keeps_cases_and_breaks_the_link() -> None:
    pairs = virtual_pairs(FUNDUS, OCT, pairs_per_image=2, seed=0)
    control = shuffled_pairs(pairs, seed=1)
    assert len(control) == len(pairs)
    for split in Split:
        src = [p for p in pairs if p.split is split]
        ctl = [p for p in control if p.split is split]
        assert [(p.fundus_sha, p.label01, p.patient_id) for p in src] == [
            (p.fundus_sha, p.label01, p.patient_id) for p in ctl
        ]
        assert Counter(p.oct_sha for p in src) == Counter(p.oct_sha for p in ctl)
    assert all(p.kind == "shuffled" for p in control)
    disagree = sum(is_disease(Modality.OCT, BY_SHA[p.oct_sha].label) != bool(p.label01) for p in control)
    assert disagree > 0.2 * len(control)  # the OCT no longer carries the pair's label
    assert shuffled_pairs(pairs, seed=1) == control


def test_pair_counts() -> None:
    pairs = virtual_pairs(FUNDUS, OCT, pairs_per_image=1, seed=0)
    counts = pair_counts(pairs)
    assert sum(c["pairs"] for c in counts.values()) == len(pairs)
    assert counts["train"]["diseased"] == sum(p.label01 for p in pairs if p.split is Split.TRAIN)
