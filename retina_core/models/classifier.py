"""One wrapper for both modality CNNs: a timm backbone plus the spec that describes it.

The wrapper adds nothing to the network itself; it exists so every stage gets the same
three things from one object: logits for training, the pre-logit embedding for fusion
(taken through timm's ``forward_features`` / ``forward_head(pre_logits=True)`` contract, so
it is right for any architecture), and the Grad-CAM target layer named in the spec.
"""

from __future__ import annotations

import timm
from torch import Tensor, nn

from retina_core.models.cam_layer import get_module
from retina_core.models.spec import ModelSpec


def create_backbone(architecture: str, *, num_outputs: int, in_chans: int) -> nn.Module:
    """A randomly initialised timm model; weights only ever come from local files, never a hub."""
    backbone = timm.create_model(architecture, pretrained=False, num_classes=num_outputs, in_chans=in_chans)
    init_head(backbone)
    return backbone


def init_head(backbone: nn.Module, std: float = 0.01) -> None:
    """Start every prediction near uniform (logits close to 0, initial loss close to ln K).

    Some timm families scale the classifier's init by ``1/sqrt(num_classes)``, sized for
    ImageNet's 1000 classes: EfficientNet's head with 5 outputs starts at logit std ~1.8 and
    from-scratch training first spends epochs undoing it (measured: train loss above 3 for
    five classes). A small normal weight and zero bias remove that for any architecture.
    """
    head = backbone.get_classifier() if hasattr(backbone, "get_classifier") else None
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=std)
        nn.init.zeros_(head.bias)


def embedding_dim_of(backbone: nn.Module) -> int:
    """Width of ``forward_head(..., pre_logits=True)``.

    ``head_hidden_size`` first: for models with a head MLP (MobileNetV3, ConvNeXt heads) it
    differs from ``num_features``, which is the width of ``forward_features``.
    """
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


class RetinaClassifier(nn.Module):
    """A timm backbone with its :class:`ModelSpec`; module paths in the spec are relative to this."""

    def __init__(self, spec: ModelSpec, backbone: nn.Module | None = None) -> None:
        super().__init__()
        if backbone is None:
            backbone = create_backbone(
                spec.architecture, num_outputs=spec.num_outputs, in_chans=spec.in_chans
            )
        if embedding_dim_of(backbone) != spec.embedding_dim:
            raise ValueError(
                f"{spec.architecture} embeds to {embedding_dim_of(backbone)} features, "
                f"spec says {spec.embedding_dim}"
            )
        self.spec = spec
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def embed(self, x: Tensor) -> Tensor:
        """The pre-logit embedding the fusion head is trained on, shape (N, spec.embedding_dim)."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward_with_embedding(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and embedding from one pass through the features (half the cost of calling both)."""
        features = self.backbone.forward_features(x)
        embedding = self.backbone.forward_head(features, pre_logits=True)
        logits = self.backbone.forward_head(features)
        return logits, embedding

    def cam_target_layer(self) -> nn.Module:
        return get_module(self, self.spec.cam_layer)
