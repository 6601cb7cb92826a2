"""The JSON the service answers with (the OpenAPI schema at /docs is generated from these)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

RESEARCH_USE = "Research use only: not a diagnosis and not a medical device."


class ModalityAnswer(BaseModel):
    status: Literal["predicted", "withheld"]
    quality: list[str] = Field(default_factory=list, description="Why a prediction was withheld.")
    model: str | None = None
    version: int | None = None
    predicted: str | None = None
    probabilities: dict[str, float] | None = Field(None, description="As the model outputs them.")
    calibrated_probabilities: dict[str, float] | None = Field(
        None, description="Temperature-scaled with the model card's T (equal to the above when T is unknown)."
    )
    temperature: float | None = None
    disease_probability: float | None = Field(None, description="Fundus: DR grade >= 1; OCT: not NORMAL.")
    referral_probability: float | None = Field(
        None, description="Calibrated. Fundus: referable DR (grade >= 2); OCT: urgent referral (CNV or DME)."
    )
    referral_kind: Literal["referable DR", "urgent OCT referral"] | None = None
    gradcam: str | None = Field(None, description="URL of the Grad-CAM overlay PNG.")


class FusionAnswer(BaseModel):
    fusion: Literal["both", "fundus-only", "oct-only"]
    model: str
    version: int
    disease_probability: float = Field(description="As the head outputs it.")
    calibrated_disease_probability: float
    temperature: float | None
    operating_threshold: float | None = Field(description="From the model card's test evaluation.")
    threshold_source: str | None = None
    above_threshold: bool | None
    gradcam: dict[str, str] | None = Field(None, description="URLs of the fusion head's overlays.")
    modality_share: dict[str, float] | None = Field(
        None,
        description="Share of the fused disease decision owed to each modality ({'fundus': s, 'oct': 1 - s}, "
        "Integrated Gradients over the two embeddings); None unless both images were used.",
    )


class MultiTaskAnswer(BaseModel):
    """The multi-task fusion head's three outputs, when it is the champion (as the head outputs them)."""

    model: str
    version: int
    inputs: Literal["both", "fundus-only", "oct-only"]
    grade_probabilities: dict[str, float] = Field(description="DR grade 0-4 (ordinal output).")
    grade: str
    oct_probabilities: dict[str, float] = Field(description="CNV, DME, DRUSEN, NORMAL.")
    oct_class: str
    disease_probability: float = Field(description="Normal vs disease, from the same head.")


class Referral(BaseModel):
    decision: Literal["refer", "urgent", "routine", "no prediction"]
    advice: str


class PredictAnswer(BaseModel):
    id: str = Field(description="Prediction id; overlays live under /v1/predictions/{id}/.")
    models: dict[str, int] = Field(description="Every model version that answered, by name.")
    fundus: ModalityAnswer | None
    oct: ModalityAnswer | None
    fusion: FusionAnswer | None
    multitask: MultiTaskAnswer | None = Field(
        None,
        description="The multi-task head (grade, OCT class, disease) when fusion_multitask has a champion.",
    )
    referral: Referral
    research_use_only: str = RESEARCH_USE
    seconds: float


class Interval(BaseModel):
    """A metric's point estimate and 95% CI; None where undefined on the test data."""

    value: float | None
    low: float | None
    high: float | None


class CardMetricAnswer(Interval):
    name: str
    label: str
    level: str


class ModelEntry(BaseModel):
    name: str
    version: int
    status: str
    primary_metric: str
    primary: Interval | None
    temperature: float | None
    operating_threshold: float | None
    metrics: list[CardMetricAnswer] = Field(description="Test metrics with 95% CIs from the model card.")
    card_url: str | None


class ModelsAnswer(BaseModel):
    models: list[ModelEntry]
    research_use_only: str = RESEARCH_USE


class Problem(BaseModel):
    """Every error body: a stable code for scripts, a message for people."""

    code: str
    message: str
    field: str | None = None
