"""The evaluation result as data: stored beside the model (metrics.json) and read by reports.

Pydantic models so the result round-trips through JSON unchanged. ``nan`` (a metric
undefined on this data) is written as the string ``"NaN"`` rather than ``null``, so it
reads back as ``nan`` and never passes for a missing field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from retina_core.evaluation.bootstrap import Estimate
from retina_core.evaluation.calibration import ReliabilityBin


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")


class RocCurve(_Result):
    """At most 200 operating points; ``threshold`` ``None`` is the "nothing positive" corner."""

    fpr: list[float]
    tpr: list[float]
    thresholds: list[float | None]


class ClassMetrics(_Result):
    name: str
    precision: Estimate
    recall: Estimate
    f1: Estimate
    support: int


class LevelMetrics(_Result):
    """Metrics at one level (image or patient); each CI comes from resampling patients."""

    n: int = Field(description="Rows evaluated at this level (images or patients).")
    n_patients: int
    accuracy: Estimate
    balanced_accuracy: Estimate
    macro_f1: Estimate
    qwk: Estimate | None = Field(None, description="Quadratic weighted kappa; ordinal tasks only.")
    ovr_auc: Estimate = Field(description="Macro one-vs-rest AUC over the classes present.")
    per_class: list[ClassMetrics]
    confusion_matrix: list[list[int]] = Field(description="Rows: true class; columns: predicted class.")
    referable_sensitivity: Estimate
    referable_specificity: Estimate
    referable_auc: Estimate
    disease_sensitivity: Estimate
    disease_specificity: Estimate
    disease_auc: Estimate = Field(description="Normal vs any disease, score 1 - P(normal).")
    disease_roc: RocCurve
    referable_roc: RocCurve


class CalibrationMetrics(_Result):
    ece: float
    nll: float
    brier: float = Field(description="Multiclass Brier: sum over classes, mean over samples (range 0-2).")
    reliability: list[ReliabilityBin]


class CalibrationReport(_Result):
    temperature: float | None = Field(description="Fitted on the validation split; None when not fitted.")
    n_bins: int
    before: CalibrationMetrics
    after: CalibrationMetrics | None = Field(description="After temperature scaling; None when not fitted.")


class EvaluationResult(_Result):
    task: str
    label_names: list[str]
    referable_name: str
    primary_metric: Literal["qwk", "macro_f1"]
    primary: Estimate = Field(description="The primary metric at image level, with its patient-level CI.")
    aggregation: Literal["mean", "max"]
    n_boot: int
    seed: int
    image_level: LevelMetrics
    patient_level: LevelMetrics
    calibration: CalibrationReport


class BinaryResult(_Result):
    """Screening (normal vs disease) from one probability per item, e.g. the fusion head."""

    n: int
    n_patients: int
    prevalence: float
    auc: Estimate
    accuracy: Estimate = Field(description="At threshold 0.5.")
    sensitivity: Estimate = Field(description="At threshold 0.5.")
    specificity: Estimate = Field(description="At threshold 0.5.")
    youden_threshold: float
    youden_source: Literal["validation", "evaluated data"] = Field(
        description="Where the Youden threshold was chosen; 'evaluated data' is optimistic."
    )
    youden_sensitivity: Estimate
    youden_specificity: Estimate
    brier: Estimate = Field(description="Binary Brier mean((p - y)^2), range 0-1.")
    ece: float = Field(description="Top-label ECE of the two-class probabilities [1 - p, p].")
    roc: RocCurve
