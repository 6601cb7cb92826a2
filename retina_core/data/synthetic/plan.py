"""Which images a synthetic data set holds, decided before any pixel is rendered.

Planning is pure and cheap: labels, identifiers, sizes, patients, folders and one seed per image.
Rendering then needs nothing but an item, so the output is byte-identical for a seed whatever
order (or process) renders it in, and the class balance can be checked without drawing anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retina_core.domain import DRGrade, OctClass, Split

APTOS_GRADE_COUNTS = (1805, 370, 999, 193, 295)
"""APTOS 2019 training-set images per DR grade: the imbalance the fundus model must cope with."""
KERMANY_CLASS_COUNTS = (37205, 11348, 8616, 26315)
"""Kermany 2018 OCT images per class, in OctClass order (CNV, DME, DRUSEN, NORMAL)."""
MIN_FUNDUS_PER_GRADE = 2
MIN_OCT_PATIENTS_PER_CLASS = 4
"""Enough patients per class for a patient-level test split to hold every class."""
FUNDUS_WIDTHS = (600, 2400)
"""Real APTOS photos range from 640 px to over 3000 px wide; capped so full-size sets stay cheap."""
OCT_WIDTHS = (512, 768, 1024)
OCT_WIDTH_WEIGHTS = (0.55, 0.3, 0.15)
OCT_HEIGHT = 496
TEST_PATIENT_FRACTION = 0.1
"""Kermany's test/ folder holds about a tenth of its patients."""
LEAKED_PATIENTS = 2
"""Patients with scans in both train/ and test/, as real Kermany has: ingestion must regroup them."""
DISEASED_PAIR_FRACTION = 0.5
COMPLEMENTARY_FUNDUS_GRADES = ((DRGrade.MILD, 0.7), (DRGrade.MODERATE, 0.3))
COMPLEMENTARY_OCT_CLASSES = ((OctClass.DME, 0.5), (OctClass.DRUSEN, 0.3), (OctClass.CNV, 0.2))
COMPLEMENTARY_OCT_SEVERITY = (0.0, 0.3)
CONCORDANT_FUNDUS_GRADES = (
    (DRGrade.MILD, 0.2),
    (DRGrade.MODERATE, 0.35),
    (DRGrade.SEVERE, 0.2),
    (DRGrade.PROLIFERATIVE, 0.25),
)
CONCORDANT_OCT_CLASSES = ((OctClass.DME, 0.55), (OctClass.DRUSEN, 0.25), (OctClass.CNV, 0.2))

_STREAM_FUNDUS, _STREAM_OCT, _STREAM_OCT_PATIENT, _STREAM_PAIRS = 1, 2, 3, 4


@dataclass(frozen=True)
class FundusItem:
    id_code: str
    grade: DRGrade
    width: int
    seed: tuple[int, ...]


@dataclass(frozen=True)
class OctItem:
    oct_class: OctClass
    patient: str
    number: int
    split: Split
    width: int
    height: int
    seed: tuple[int, ...]
    patient_seed: tuple[int, ...]
    """Seeds the patient's :class:`OctPatient`, shared by all of the patient's scans."""

    @property
    def stem(self) -> str:
        return f"{self.oct_class.name}-{self.patient}-{self.number}"


@dataclass(frozen=True)
class PairItem:
    patient_id: str
    eye: str
    dr_grade: DRGrade
    oct_class: OctClass
    oct_severity: float | None
    complementary: bool
    """Diseased in one modality only; the other looks (and is labelled) normal."""
    fundus_width: int
    oct_width: int
    oct_height: int
    seed: tuple[int, ...]

    @property
    def stem(self) -> str:
        return f"{self.patient_id}_{self.eye}"


def allocate(total: int, weights: Sequence[float], minimum: int) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder), each share at least ``minimum``.

    The floor is lowered when ``total`` cannot give every class ``minimum``.
    """
    k = len(weights)
    floor = min(minimum, total // k)
    ideal = np.asarray(weights, float) / float(sum(weights)) * total
    counts = np.maximum(floor, np.floor(ideal)).astype(int)
    while counts.sum() > total:
        over = np.where(counts > floor, counts - ideal, -np.inf)
        counts[int(np.argmax(over))] -= 1
    while counts.sum() < total:
        counts[int(np.argmax(ideal - counts))] += 1
    return [int(c) for c in counts]


def _choose(rng: np.random.Generator, options: Sequence[tuple[object, float]]) -> object:
    values = [v for v, _ in options]
    weights = np.array([w for _, w in options], float)
    return values[int(rng.choice(len(values), p=weights / weights.sum()))]


def oct_size(rng: np.random.Generator, size: int | None) -> tuple[int, int]:
    """Width and height: Kermany's own widths at 496 rows, or ``size`` wide with Kermany's aspect.

    Drawn per patient for Kermany, since one eye is scanned with one protocol.
    """
    if size is not None:
        return size, max(8, round(size * OCT_HEIGHT / 512))
    return int(rng.choice(OCT_WIDTHS, p=np.array(OCT_WIDTH_WEIGHTS) / sum(OCT_WIDTH_WEIGHTS))), OCT_HEIGHT


def fundus_width(rng: np.random.Generator, size: int | None) -> int:
    if size is not None:
        return size
    lo, hi = FUNDUS_WIDTHS
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def plan_fundus(
    seed: int, count: int, size: int | None, grade_weights: Sequence[float] | None = None
) -> list[FundusItem]:
    """APTOS-like photos: grades in APTOS proportions (or ``grade_weights``), shuffled, unique 12-hex ids."""
    rng = np.random.default_rng((seed, 0, _STREAM_FUNDUS))
    weights = APTOS_GRADE_COUNTS if grade_weights is None else grade_weights
    grades = [
        g
        for g, n in zip(DRGrade, allocate(count, weights, MIN_FUNDUS_PER_GRADE), strict=True)
        for _ in range(n)
    ]
    rng.shuffle(grades)
    ids: set[str] = set()
    items = []
    for index, grade in enumerate(grades):
        id_code = rng.bytes(6).hex()
        while id_code in ids:
            id_code = rng.bytes(6).hex()
        ids.add(id_code)
        items.append(
            FundusItem(id_code, DRGrade(grade), fundus_width(rng, size), (seed, _STREAM_FUNDUS, index))
        )
    return items


def _scans_per_patient(rng: np.random.Generator, scans: int, per_patient: tuple[int, int]) -> list[int]:
    """Several B-scans per patient, at least ``MIN_OCT_PATIENTS_PER_CLASS`` patients where scans allow."""
    lo, hi = per_patient
    patients = min(scans, max(MIN_OCT_PATIENTS_PER_CLASS, round(scans / ((lo + hi) / 2))))
    counts = rng.integers(lo, hi + 1, patients)
    missing = scans - int(counts.sum())
    while missing != 0:
        i = int(rng.integers(patients))
        if missing > 0 and (counts[i] < hi or counts.min() >= hi):
            counts[i] += 1
            missing -= 1
        elif missing < 0 and counts[i] > 1:
            counts[i] -= 1
            missing += 1
    return [int(c) for c in counts]


def plan_oct(
    seed: int,
    count: int,
    size: int | None,
    per_patient: tuple[int, int],
    class_weights: Sequence[float] | None = None,
) -> list[OctItem]:
    """Kermany-like scans: class shares as Kermany's (or ``class_weights``), grouped into patients,
    a tenth of patients in test/."""
    rng = np.random.default_rng((seed, 0, _STREAM_OCT))
    numbers: set[str] = set()
    patients: list[tuple[OctClass, str, int, Split]] = []
    weights = KERMANY_CLASS_COUNTS if class_weights is None else class_weights
    for oct_class, scans in zip(OctClass, allocate(count, weights, MIN_OCT_PATIENTS_PER_CLASS), strict=True):
        counts = _scans_per_patient(rng, scans, per_patient)
        tests = round(TEST_PATIENT_FRACTION * len(counts))
        tests = min(max(tests, 1 if len(counts) >= 2 else 0), len(counts) - 1)
        in_test = set(rng.permutation(len(counts))[:tests].tolist())
        for i, n in enumerate(counts):
            number = str(rng.integers(1_000_000, 10_000_000))
            while number in numbers:
                number = str(rng.integers(1_000_000, 10_000_000))
            numbers.add(number)
            patients.append((oct_class, number, n, Split.TEST if i in in_test else Split.TRAIN))
    leaked = _leaked(rng, patients)
    items = []
    for p_index, (oct_class, number, n, split) in enumerate(patients):
        width, height = oct_size(rng, size)
        for k in range(1, n + 1):
            scan_split = Split.TEST if (number in leaked and k == n) else split
            seed_k = (seed, _STREAM_OCT, len(items))
            patient_seed = (seed, _STREAM_OCT_PATIENT, p_index)
            items.append(OctItem(oct_class, number, k, scan_split, width, height, seed_k, patient_seed))
    return items


def _leaked(rng: np.random.Generator, patients: list[tuple[OctClass, str, int, Split]]) -> set[str]:
    """Train patients (of different classes where possible) whose last scan goes to test/."""
    candidates = [p for p in patients if p[3] is Split.TRAIN and p[2] >= 2]
    order = rng.permutation(len(candidates)).tolist()
    chosen: list[tuple[OctClass, str, int, Split]] = []
    for i in order:
        if len(chosen) < LEAKED_PATIENTS and candidates[i][0] not in {c[0] for c in chosen}:
            chosen.append(candidates[i])
    for i in order:
        if len(chosen) < LEAKED_PATIENTS and candidates[i] not in chosen:
            chosen.append(candidates[i])
    return {c[1] for c in chosen}


def plan_pairs(seed: int, count: int, size: int | None, complementary_fraction: float) -> list[PairItem]:
    """A same-eye fundus+OCT cohort in which some disease shows in one modality only.

    Half the eyes are diseased; of those, ``complementary_fraction`` show mild disease in one
    modality while the other is normal (and labelled so). Either model alone then misses some
    diseased eyes that a fusion model can catch from the other modality.
    """
    rng = np.random.default_rng((seed, 0, _STREAM_PAIRS))
    diseased = round(count * DISEASED_PAIR_FRACTION)
    complementary = round(diseased * complementary_fraction)
    kinds = ["normal"] * (count - diseased) + ["complementary"] * complementary
    kinds += ["concordant"] * (diseased - complementary)
    rng.shuffle(kinds)
    items: list[PairItem] = []
    patient = 0
    while len(items) < count:
        patient += 1
        both = rng.random() < 0.5 and len(items) + 1 < count
        eyes = ["OD", "OS"] if both else [str(rng.choice(["OD", "OS"]))]
        for eye in eyes:
            kind = kinds[len(items)]
            grade, oct_class, severity = _pair_labels(rng, kind)
            oct_width, oct_height = oct_size(rng, size)
            items.append(
                PairItem(
                    patient_id=f"P{patient:04d}",
                    eye=eye,
                    dr_grade=grade,
                    oct_class=oct_class,
                    oct_severity=severity,
                    complementary=kind == "complementary",
                    fundus_width=fundus_width(rng, size),
                    oct_width=oct_width,
                    oct_height=oct_height,
                    seed=(seed, _STREAM_PAIRS, len(items)),
                )
            )
    return items


def _pair_labels(rng: np.random.Generator, kind: str) -> tuple[DRGrade, OctClass, float | None]:
    if kind == "normal":
        return DRGrade.NO_DR, OctClass.NORMAL, None
    if kind == "concordant":
        return (
            DRGrade(_choose(rng, CONCORDANT_FUNDUS_GRADES)),
            OctClass(_choose(rng, CONCORDANT_OCT_CLASSES)),
            None,
        )
    if rng.random() < 0.5:
        return DRGrade(_choose(rng, COMPLEMENTARY_FUNDUS_GRADES)), OctClass.NORMAL, None
    severity = float(rng.uniform(*COMPLEMENTARY_OCT_SEVERITY))
    return DRGrade.NO_DR, OctClass(_choose(rng, COMPLEMENTARY_OCT_CLASSES)), severity
