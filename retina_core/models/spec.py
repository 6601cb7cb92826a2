"""The model spec: the facts about a model that every other stage reads.

Preprocessing takes the image size, field crop and Ben Graham from it, transforms the
channels and normalisation, Grad-CAM its target layer, reports its label names. Writing
them once here, and storing them with every registered version, keeps the stages from
disagreeing with each other or with how the model was trained (timm's ``PretrainedCfg``
is the model for this).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from retina_core.data.preprocess import Preprocessing
from retina_core.domain import Modality


@dataclass(frozen=True)
class ModelSpec:
    name: str
    """Architecture registry entrypoint: ``fundus_cnn`` or ``oct_cnn``."""
    modality: Modality
    architecture: str
    """Any timm model name."""
    in_chans: int
    image_size: int
    """Square input side in pixels."""
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
    field_crop: bool = False
    """Images are cropped to the fundus field before resizing (fundus models)."""
    ben_graham: bool = False
    """Images are Ben Graham-normalised after the crop (a fundus training option)."""

    @property
    def preprocessing(self) -> Preprocessing:
        """How an image file becomes this model's input: as it was trained, whatever today's settings say."""
        return Preprocessing(
            self.modality, self.image_size, field_crop=self.field_crop, ben_graham=self.ben_graham
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["modality"] = str(self.modality)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """A spec from :meth:`to_dict`'s output, or from a ``spec.json`` written before the spec
        carried its preprocessing (``input_size``; field crop implied by the modality)."""
        data = dict(data)
        if "input_size" in data:
            data["image_size"] = data.pop("input_size")
        data["modality"] = Modality(data["modality"])
        data.setdefault("field_crop", data["modality"] is Modality.FUNDUS)
        for key in ("mean", "std", "label_names"):
            data[key] = tuple(data[key])
        return cls(**data)
