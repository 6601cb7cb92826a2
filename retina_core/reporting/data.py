"""The report as data: everything the page shows, stored as ``report.json`` so it can be rendered again.

Keeping the numbers in one validated object (rather than computing inside the template)
means the HTML, the markdown artifacts and the JSON can never disagree, and a report can
be re-rendered after a template fix without re-running the pipeline. A field left ``None``
is a stage that did not run and renders as "not run": the report never fills a gap with a
number of its own.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from retina_core.domain import Modality, Split, class_names
from retina_core.drift.policy import RetrainDecision
from retina_core.drift.result import DriftReport
from retina_core.evaluation import BinaryResult, Estimate, EvaluationResult
from retina_core.evaluation.volume import VolumeLevelResult
from retina_core.reporting.modality_share import ModalityShareSummary
from retina_core.reporting.model_card import ModelCard

PairingKind = Literal["virtual", "real"]
GalleryKind = Literal["correct", "misclassified", "most-confident", "most-uncertain", "volume-driver"]
"""``volume-driver``: the B-scan that drove an OCT volume's eye-level score."""


class _Data(BaseModel):
    # nan ("undefined on this data") must survive the JSON round trip as nan, not become null
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")


class ClassCount(_Data):
    modality: Modality
    split: Split
    label: int
    label_name: str
    count: int


class DataSummary(_Data):
    counts: list[ClassCount] = Field(description="Images per modality x split x class.")
    quarantined: dict[str, int] = Field(default_factory=dict, description="Rejected files by reason.")
    pairing: PairingKind | None = Field(None, description="How fusion pairs were formed; None: no fusion.")
    n_pairs: int | None = None

    def table(self, modality: Modality) -> list[tuple[str, dict[Split, int]]]:
        """Rows (class name, split -> count) in label order, every split present, for one modality."""
        names = class_names(modality)
        cells = {(c.label, c.split): c.count for c in self.counts if c.modality == modality}
        return [(name, {s: cells.get((label, s), 0) for s in Split}) for label, name in enumerate(names)]

    def split_totals(self, modality: Modality) -> dict[Split, int]:
        return {s: sum(row[s] for _, row in self.table(modality)) for s in Split}

    def modalities(self) -> list[Modality]:
        return [m for m in Modality if any(c.modality == m for c in self.counts)]

    def split_counts(self, modality: Modality) -> dict[str, dict[str, int]]:
        """Split -> class name -> images: the shape a model card's training data takes."""
        return {str(s): {name: row[s] for name, row in self.table(modality)} for s in Split}


def count_classes(records: Iterable[tuple[Modality | str, Split | str, int]]) -> list[ClassCount]:
    """Tally (modality, split, label) records, e.g. from the catalog export, into named counts."""
    tally = Counter((Modality(m), Split(s), int(label)) for m, s, label in records)
    return [
        ClassCount(modality=m, split=s, label=label, label_name=class_names(m)[label], count=n)
        for (m, s, label), n in sorted(tally.items(), key=lambda item: _declared_order(*item[0]))
    ]


def _declared_order(modality: Modality, split: Split, label: int) -> tuple[int, int, int]:
    """Domain order (fundus before OCT, train/val/test), not alphabetical ("test" < "train")."""
    return list(Modality).index(modality), list(Split).index(split), label


class TrainingCurves(_Data):
    train_loss: list[float]
    val_loss: list[float]
    val_metric: list[float]
    val_metric_name: str


class RegistryDecision(_Data):
    status: Literal["champion", "candidate"]
    metric: str = Field(description="The primary metric compared on the fixed test split.")
    candidate: Estimate
    champion_version: str | None = Field(None, description="None when there was no champion yet.")
    champion: Estimate | None = None
    margin: float
    reason: str


class ModelSection(_Data):
    name: str = Field(description="fundus_cnn, oct_cnn or fusion_head.")
    version: str
    architecture: str
    image_size: int | None = Field(None, description="None for a head on embeddings.")
    primary_metric: str | None = Field(None, description="Taken from the evaluation when left out.")
    primary: Estimate | None = None
    evaluation: EvaluationResult | BinaryResult | None = None
    curves: TrainingCurves | None = None
    registry: RegistryDecision | None = None
    model_card: ModelCard | None = None
    volume_level: VolumeLevelResult | None = Field(
        None, description="OCT only, when test B-scans came from volumes: screening per eye as well."
    )

    @model_validator(mode="after")
    def _primary_from_evaluation(self) -> ModelSection:
        """The headline number is the evaluation's own, so the two cannot drift apart."""
        if self.evaluation is None or self.primary is not None:
            return self
        if isinstance(self.evaluation, BinaryResult):
            metric, value = "auc", self.evaluation.auc
        else:
            metric, value = self.evaluation.primary_metric, self.evaluation.primary
        object.__setattr__(self, "primary_metric", self.primary_metric or metric)
        object.__setattr__(self, "primary", value)
        return self


class ComparisonRow(_Data):
    name: str = Field(description="e.g. 'fundus-only', 'late fusion', 'shuffled-pair control'.")
    auc: Estimate | None
    sensitivity: Estimate | None = None
    specificity: Estimate | None = None
    n: int
    gain_vs_best_single: Estimate | None = Field(
        None, description="AUC difference to the best single modality, paired bootstrap."
    )
    note: str | None = None


class MultiTaskRow(_Data):
    """One row of the multi-task table: the head (both, one modality), its control, or an encoder's own."""

    key: str
    name: str
    inputs: str
    source: str | None = Field(None, description="An encoder's own row: the version that predicted.")
    grade_qwk: Estimate | None = None
    oct_macro_f1: Estimate | None = None
    disease_auc: Estimate | None = None


class MultiTaskSection(_Data):
    """The multi-task fusion head's evaluation as the report shows it."""

    model: str
    version: int
    status: str
    pairing: str
    rows: list[MultiTaskRow]
    registry: str | None = Field(None, description="The champion rule's reason.")


class PointingRow(_Data):
    """Field names follow ``retina_core.explain.pointing.PointingSummary`` so its ``to_dict()`` fits."""

    label: str
    n: int
    n_excluded: int = 0
    hit_rate: float
    energy: float
    random_hit_rate: float
    random_energy: float


class RoadRow(_Data):
    label: str
    n: int
    cam_score: float
    random_score: float


def road_rows(labels: Sequence[str], cam: Sequence[float], random: Sequence[float]) -> list[RoadRow]:
    """Per-class mean ROAD scores (one per image in, e.g. ``RoadScores.combined``), then an 'all' row."""
    labels_arr, cam_arr, random_arr = np.asarray(labels), np.asarray(cam, float), np.asarray(random, float)
    if not len(labels_arr) == len(cam_arr) == len(random_arr):
        raise ValueError("labels, cam and random scores must have one entry per image")
    groups = [*dict.fromkeys(labels_arr.tolist()), "all"]

    def row(label: str) -> RoadRow:
        rows = np.ones(len(labels_arr), bool) if label == "all" else labels_arr == label
        n = int(rows.sum())
        cam_score = float(cam_arr[rows].mean()) if n else math.nan
        random_score = float(random_arr[rows].mean()) if n else math.nan
        return RoadRow(label=label, n=n, cam_score=cam_score, random_score=random_score)

    return [row(label) for label in groups]


class GalleryItem(_Data):
    path: str = Field(description="Image path relative to the report directory.")
    caption: str
    true_label: str
    predicted_label: str
    confidence: float
    kind: GalleryKind


class MethodScores(_Data):
    """Another map method scored on the same images, masks and random maps as the section's own."""

    method: str
    pointing: list[PointingRow] | None = None
    road: list[RoadRow] | None = None


class ExplainSection(_Data):
    model: str
    method: str
    pointing: list[PointingRow] | None = Field(None, description="None when no lesion masks were given.")
    road: list[RoadRow] | None = None
    road_metric: str = "ROAD combined = (LeRF − MoRF) / 2; higher is more faithful"
    gallery: list[GalleryItem] = Field(default_factory=list)
    gallery_method: str | None = Field(None, description="The maps the gallery draws; None: ``method``.")
    compared: list[MethodScores] = Field(
        default_factory=list, description="Other map methods (Integrated Gradients) scored beside ``method``."
    )
    note: str | None = Field(
        None, description="Set for the fusion model: what its maps show and why no scores."
    )

    def method_rows(self) -> list[dict[str, Any]]:
        """One row per map method, all classes pooled: the side-by-side comparison (None: not scored)."""
        return [
            _pooled(self.method, self.pointing, self.road),
            *(_pooled(m.method, m.pointing, m.road) for m in self.compared),
        ]


def _pooled(method: str, pointing: list[PointingRow] | None, road: list[RoadRow] | None) -> dict[str, Any]:
    p = next((r for r in pointing or [] if r.label == "all"), None)
    r = next((r for r in road or [] if r.label == "all"), None)
    return {
        "method": method,
        "hit_rate": None if p is None else p.hit_rate,
        "random_hit_rate": None if p is None else p.random_hit_rate,
        "energy": None if p is None else p.energy,
        "random_energy": None if p is None else p.random_energy,
        "road": None if r is None else r.cam_score,
        "random_road": None if r is None else r.random_score,
    }


class ReportData(_Data):
    run_id: str
    created_at: datetime
    dataset_version: str | None = None
    synthetic: bool = Field(False, description="Images came from the synthetic generator.")
    data_summary: DataSummary | None = None
    models: list[ModelSection] = Field(default_factory=list)
    fusion_comparison: list[ComparisonRow] | None = None
    missing_modality: list[ComparisonRow] | None = None
    modality_share: ModalityShareSummary | None = Field(
        None, description="Share of fused decisions owed to each modality, with the complementary-set check."
    )
    multitask: MultiTaskSection | None = Field(
        None, description="The multi-task head (grade, OCT class, disease); None when it was not trained."
    )
    explanations: list[ExplainSection] | None = None
    drift: DriftReport | None = Field(None, description="The newest drift check; None when none ran.")
    retrain: RetrainDecision | None = Field(None, description="Why this retrain ran: the rules that fired.")
    notes: list[str] = Field(default_factory=list)

    @property
    def pairing(self) -> PairingKind | None:
        return self.data_summary.pairing if self.data_summary is not None else None

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> ReportData:
        return cls.model_validate_json(text)


def pointing_rows(summaries: Iterable[Any]) -> list[PointingRow]:
    """Rows from ``PointingSummary`` objects (or their dicts), without importing the explain package."""
    return [PointingRow.model_validate(s if isinstance(s, Mapping) else s.to_dict()) for s in summaries]
