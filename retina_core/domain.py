"""Domain vocabulary shared by every layer.

Labels are stored as small integers in the catalog so that one column serves both
modalities; these enums are the only place that says what each integer means.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

MAX_PATIENT_ID = 128
"""Characters in a patient id: the catalog's column width (PostgreSQL enforces it, SQLite does not)."""


class Modality(StrEnum):
    FUNDUS = "fundus"
    OCT = "oct"


class DRGrade(IntEnum):
    """APTOS 2019 / ICDR diabetic retinopathy grade."""

    NO_DR = 0
    MILD = 1
    MODERATE = 2
    SEVERE = 3
    PROLIFERATIVE = 4

    @property
    def display(self) -> str:
        return ["No DR", "Mild", "Moderate", "Severe", "Proliferative"][self.value]


class OctClass(IntEnum):
    """Kermany 2018 OCT classes; the integer is the catalog label, the name the folder."""

    CNV = 0
    DME = 1
    DRUSEN = 2
    NORMAL = 3

    @classmethod
    def from_folder(cls, name: str) -> OctClass:
        return cls[name.upper()]


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class Source(StrEnum):
    APTOS = "aptos"
    KERMANY = "kermany"
    PAIRS = "pairs"
    DICOM = "dicom"


MODALITY_OF_SOURCE: dict[Source, Modality] = {Source.APTOS: Modality.FUNDUS, Source.KERMANY: Modality.OCT}


def class_names(modality: Modality) -> list[str]:
    if modality is Modality.FUNDUS:
        return [g.display for g in DRGrade]
    return [c.name for c in OctClass]


def num_classes(modality: Modality) -> int:
    return len(class_names(modality))


def is_disease(modality: Modality, label: int) -> bool:
    """Binary screening label: any DR grade above 0, any OCT class but NORMAL."""
    if modality is Modality.FUNDUS:
        return int(label) != DRGrade.NO_DR
    return int(label) != OctClass.NORMAL


def is_referable(modality: Modality, label: int) -> bool:
    """Referable DR is grade >= 2; urgent OCT referral is CNV or DME."""
    if modality is Modality.FUNDUS:
        return int(label) >= DRGrade.MODERATE
    return int(label) in (OctClass.CNV, OctClass.DME)
