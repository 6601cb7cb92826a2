"""Shared builders: timm classifiers wrapped like the registry does, and a planted lesion detector."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import timm
import torch
from torch import Tensor, nn

from retina_core.domain import Modality
from retina_core.models import ModelSpec, RetinaClassifier
from retina_core.models.cam_layer import resolve_cam_layer
from retina_core.models.classifier import embedding_dim_of

LESION_SIDE = 10
IMAGE_SIDE = 64


def timm_classifier(
    architecture: str, *, num_classes: int = 3, in_chans: int = 3, image_size: int = 64, **timm_kwargs: Any
) -> RetinaClassifier:
    """A RetinaClassifier over any timm model; unlike ``create_model`` it passes timm kwargs (ViT img_size)."""
    backbone = timm.create_model(
        architecture, pretrained=False, num_classes=num_classes, in_chans=in_chans, **timm_kwargs
    )
    spec = ModelSpec(
        name="test_cnn",
        modality=Modality.FUNDUS if in_chans == 3 else Modality.OCT,
        architecture=architecture,
        in_chans=in_chans,
        image_size=image_size,
        mean=(0.5,) * in_chans,
        std=(0.5,) * in_chans,
        label_names=tuple(f"class{i}" for i in range(num_classes)),
        num_outputs=num_classes,
        embedding_dim=embedding_dim_of(backbone),
        cam_layer="backbone." + resolve_cam_layer(backbone, in_chans, image_size=image_size),
    )
    return RetinaClassifier(spec, backbone)


@pytest.fixture
def make_classifier() -> Callable[..., RetinaClassifier]:
    torch.manual_seed(0)
    return timm_classifier


class LesionDetector(nn.Module):
    """Hand-set 'disease' detector: the class-1 logit grows with bright (> 0.6) patches.

    Its evidence is exactly the bright square, so a faithful map must point there; no
    training needed, so the test is deterministic and fast.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.features[0].weight.fill_(1.0 / 27.0)
            self.features[0].bias.copy_(torch.tensor([-0.6, -0.65, -0.7, -0.75]))
            self.head.weight.copy_(torch.tensor([[0.0] * 4, [200.0] * 4]))
            self.head.bias.copy_(torch.tensor([0.0, -0.5]))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def lesion_images(n: int, seed: int = 0) -> tuple[Tensor, np.ndarray]:
    """Dim noise (< 0.5) with one bright square each, at a random place; returns images and masks."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.5, size=(n, 3, IMAGE_SIDE, IMAGE_SIDE)).astype(np.float32)
    masks = np.zeros((n, IMAGE_SIDE, IMAGE_SIDE), dtype=bool)
    for i in range(n):
        top, left = rng.integers(0, IMAGE_SIDE - LESION_SIDE, size=2)
        images[i, :, top : top + LESION_SIDE, left : left + LESION_SIDE] = 1.0
        masks[i, top : top + LESION_SIDE, left : left + LESION_SIDE] = True
    return torch.from_numpy(images), masks


@pytest.fixture
def lesion_detector() -> LesionDetector:
    return LesionDetector()


@pytest.fixture
def lesion_batch() -> tuple[Tensor, np.ndarray]:
    return lesion_images(8)
