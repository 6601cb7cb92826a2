"""What the evaluator needs to know about a grading task, and nothing about models or data.

The integers mean different things per modality (grade 0 is normal for DR, class 3 for
OCT), so the evaluator takes them from one small spec built from the domain enums.
"""

from __future__ import annotations

from dataclasses import dataclass

from retina_core.domain import DRGrade, Modality, OctClass, class_names


@dataclass(frozen=True)
class TaskSpec:
    name: str
    label_names: tuple[str, ...]
    normal_class: int
    """Index of the normal class; the disease score is ``1 - P(normal)``."""
    referable_classes: tuple[int, ...]
    """Classes that trigger referral; the referable score is the sum of their probabilities."""
    ordinal: bool
    """Ordered grades: QWK is then the primary metric, macro-F1 otherwise."""
    referable_name: str
    severity: tuple[int, ...] | None = None
    """Classes from least to most severe, for a patient's worst label; ``None`` means index order."""

    def __post_init__(self) -> None:
        k = len(self.label_names)
        if not 0 <= self.normal_class < k:
            raise ValueError(f"normal_class {self.normal_class} is not a class index (K={k})")
        if not self.referable_classes or any(not 0 <= c < k for c in self.referable_classes):
            raise ValueError(f"referable_classes {self.referable_classes} must be class indices")
        if self.normal_class in self.referable_classes:
            raise ValueError("the normal class cannot be referable")
        if self.severity is not None and sorted(self.severity) != list(range(k)):
            raise ValueError(f"severity must be a permutation of 0..{k - 1}")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def severity_order(self) -> tuple[int, ...]:
        return self.severity if self.severity is not None else tuple(range(self.num_classes))

    @property
    def primary_metric(self) -> str:
        return "qwk" if self.ordinal else "macro_f1"

    @classmethod
    def for_modality(cls, modality: Modality) -> TaskSpec:
        """The DR-grading or OCT task, as ``retina_core.domain`` defines it."""
        names = tuple(class_names(modality))
        if modality is Modality.FUNDUS:
            return cls(
                name="dr_grading",
                label_names=names,
                normal_class=int(DRGrade.NO_DR),
                referable_classes=(int(DRGrade.MODERATE), int(DRGrade.SEVERE), int(DRGrade.PROLIFERATIVE)),
                ordinal=True,
                referable_name="referable DR",
            )
        return cls(
            name="oct_classification",
            label_names=names,
            normal_class=int(OctClass.NORMAL),
            referable_classes=(int(OctClass.CNV), int(OctClass.DME)),
            ordinal=False,
            referable_name="urgent referral",
            # CNV needs anti-VEGF within days, DME soon, drusen are watched: worst last
            severity=(int(OctClass.NORMAL), int(OctClass.DRUSEN), int(OctClass.DME), int(OctClass.CNV)),
        )
