"""Modality encoders: a timm-style architecture registry (``create_model``) and the spec every stage reads."""

from retina_core.models.architectures import build_from_spec, create_model, list_models
from retina_core.models.classifier import RetinaClassifier
from retina_core.models.spec import ModelSpec

__all__ = ["ModelSpec", "RetinaClassifier", "build_from_spec", "create_model", "list_models"]
