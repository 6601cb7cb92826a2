"""The modality share of fused decisions, as reported: pydantic data, free of torch.

Computed by :mod:`retina_core.explain.modality_share`; kept here so the result types
(``retina_core.results``) and the report read it without loading torch or captum.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ShareCheck(BaseModel):
    """The complementary-set check, as reported: does the diseased modality carry the larger share?"""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")

    source: str = Field(description="'real' complementary same-eye pairs, or 'recombined' test pairs.")
    n: int = Field(description="Complementary cases scored.")
    n_fundus_diseased: int
    n_oct_diseased: int
    diseased_larger: dict[str, float] = Field(
        description="Fraction of cases where the diseased modality's IG share exceeds 0.5, with its CI "
        "(value, low, high, n_units)."
    )
    mean_diseased_share: float = Field(description="Mean IG share of the diseased modality.")
    occlusion_diseased_larger: float = Field(
        description="The same fraction by occlusion with the head's missing-modality input."
    )
    baseline_occlusion_diseased_larger: float = Field(
        description="The same fraction by occlusion with the baseline (normal-eye mean) embedding."
    )


class ModalityShareSummary(BaseModel):
    """What the fusion section reports: the share of fused decisions owed to each modality."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")

    method: str = "Integrated Gradients (captum) over the concatenated embeddings, summed per modality"
    baseline: str = "mean embedding of the training split's normal eyes, per modality"
    n_test: int
    mean_fundus_share: float = Field(description="Mean fundus share over the test pairs (OCT: 1 - this).")
    mean_fundus_share_diseased: float = Field(description="The same over the diseased test pairs.")
    occlusion_agreement: float = Field(
        description="Fraction of test pairs where IG and occlusion by the missing-modality input name "
        "the same larger modality."
    )
    baseline_occlusion_agreement: float = Field(
        description="The same for occlusion by the baseline (normal-eye mean) embedding."
    )
    max_completeness_error: float = Field(
        description="Largest |sum of attributions - (F(x) - F(baseline))| over the test pairs."
    )
    checks: list[ShareCheck] = Field(default_factory=list, description="Complementary-set checks.")
