"""A drift check as data: stored as JSON in the object store, read by the report, the artifact and the event.

Every p-value is kept twice: as the test gave it and Holm-adjusted over the whole check
(both modalities, every test), and ``drifting`` is decided on the adjusted one together
with the effect size, so what the report calls drift is exactly what the policy acted on.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from retina_core.domain import Modality
from retina_core.evaluation.bootstrap import Estimate


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")


class FeatureDrift(_Data):
    feature: str
    label: str
    statistic: float = Field(description="Kolmogorov-Smirnov D.")
    p_value: float
    adjusted_p: float = Field(math.nan, description="Holm-adjusted over every test of the check.")
    effect: float = Field(description="Wasserstein distance in reference standard deviations.")
    drifting: bool = False
    reference_median: float
    new_median: float
    edges: list[float] = Field(description="Histogram bin edges shared by both samples.")
    reference_density: list[float]
    new_density: list[float]


class EmbeddingDrift(_Data):
    model: str = Field(description="The champion encoder whose embedding space was compared.")
    mmd2: float
    p_value: float
    adjusted_p: float = math.nan
    bandwidth: float
    n_reference: int
    n_new: int
    permutations: int
    drifting: bool = False


class LabelDrift(_Data):
    label_names: list[str]
    reference_counts: list[int]
    new_counts: list[int]
    chi2: float
    p_value: float
    adjusted_p: float = math.nan
    cramers_v: float
    drifting: bool = False


class ChampionWatch(_Data):
    model: str
    metric: str
    registered: Estimate = Field(description="The champion's registered figure (its test split).")
    new: Estimate = Field(description="The same metric on the newly landed labelled images.")
    difference: Estimate = Field(description="new - registered, with the CI of the difference.")
    margin: float
    degraded: bool
    reason: str


class ModalityDrift(_Data):
    modality: Modality
    champion: str | None = Field(None, description="'fundus_cnn v3'; None when no champion exists yet.")
    reference_version: int | None = Field(None, description="Dataset version the champion trained on.")
    n_reference: int = 0
    n_new: int = 0
    n_new_labelled: int = 0
    features: list[FeatureDrift] = Field(default_factory=list)
    embedding: EmbeddingDrift | None = None
    labels: LabelDrift | None = None
    watch: ChampionWatch | None = None
    note: str | None = Field(None, description="Why something was not tested.")

    @property
    def drifting(self) -> bool:
        parts = [*self.features, self.embedding, self.labels]
        return any(p is not None and p.drifting for p in parts)

    def drifting_names(self) -> list[str]:
        names = [f.feature for f in self.features if f.drifting]
        if self.embedding is not None and self.embedding.drifting:
            names.append("embeddings")
        if self.labels is not None and self.labels.drifting:
            names.append("labels")
        return names


class DriftReport(_Data):
    check_id: str
    created_at: datetime
    dataset_version: int | None
    alpha: float
    min_effect: float
    n_tests: int = Field(0, description="Tests in the Holm family.")
    modalities: list[ModalityDrift]

    @property
    def drifted(self) -> bool:
        return any(m.drifting for m in self.modalities)

    @property
    def champion_degraded(self) -> bool:
        return any(m.watch is not None and m.watch.degraded for m in self.modalities)

    @property
    def new_images(self) -> int:
        return sum(m.n_new for m in self.modalities)

    def summary(self) -> str:
        """One line a person reads in a log, the event and the report's headline."""
        parts = []
        for m in self.modalities:
            if m.note and not m.features:
                parts.append(f"{m.modality.value}: {m.note}")
                continue
            names = m.drifting_names()
            text = f"{m.modality.value}: {m.n_new} new, " + (
                f"drift in {', '.join(names)}" if names else "no drift"
            )
            if m.watch is not None:
                text += f"; champion {m.watch.metric} {m.watch.difference.value:+.3f}" + (
                    " (degraded)" if m.watch.degraded else ""
                )
            parts.append(text)
        return "; ".join(parts) or "nothing to check"

    def payload(self) -> dict[str, Any]:
        """The figures ``retina.dataset.drift`` carries (small, JSON-native)."""
        return {
            "check_id": self.check_id,
            "dataset_version": self.dataset_version,
            "new_images": self.new_images,
            "drifted": self.drifted,
            "champion_degraded": self.champion_degraded,
            "summary": self.summary(),
            "alpha": self.alpha,
            "modalities": {
                m.modality.value: {
                    "n_new": m.n_new,
                    "drifting": m.drifting_names(),
                    "features": {
                        f.feature: {"effect": _finite(f.effect), "adjusted_p": _finite(f.adjusted_p)}
                        for f in m.features
                    },
                    "embedding_p": None if m.embedding is None else _finite(m.embedding.adjusted_p),
                    "labels_p": None if m.labels is None else _finite(m.labels.adjusted_p),
                    "champion_difference": None if m.watch is None else _finite(m.watch.difference.value),
                }
                for m in self.modalities
            },
        }

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> DriftReport:
        return cls.model_validate_json(text)


def _finite(value: float) -> float | None:
    """JSON has no nan: an undefined figure travels as null in the event."""
    return round(float(value), 6) if math.isfinite(value) else None
