"""The model spec: the facts about a model that every other stage reads.

Transforms take the input size and normalisation from it, Grad-CAM takes its target
layer from it, reports take label names from it. Writing them once here keeps the
stages from disagreeing (timm's ``PretrainedCfg`` is the model for this).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from retina_core.domain import Modality


@dataclass(frozen=True)
class ModelSpec:
    name: str
    """Registry entrypoint: ``fundus_cnn`` or ``oct_cnn``."""
    modality: Modality
    architecture: str
    """Any timm model name."""
    in_chans: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label_names: tuple[str, ...]
    num_outputs: int
    """Number of logits: len(label_names) for classification, 1 for fundus regression."""
    embedding_dim: int
    cam_layer: str
    """Dotted module path of the Grad-CAM target layer, derived from timm's feature_info."""
    task: str = "classification"
    """'classification' (cross-entropy) or 'regression' (one output, thresholds map it to grades)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["modality"] = str(self.modality)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        data = dict(data)
        data["modality"] = Modality(data["modality"])
        for key in ("mean", "std", "label_names"):
            data[key] = tuple(data[key])
        return cls(**data)
