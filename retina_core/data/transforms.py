"""Albumentations pipelines on the cached uint8 arrays, ending in a normalised float tensor.

Augmentations follow what each modality tolerates. A fundus photo has no canonical
orientation (left/right eyes, camera rotation), so any flip or rotation is a valid new
sample; colour varies between cameras, so colour jitter helps, mildly. An OCT B-scan has a
fixed up/down (vitreous above, choroid below) and layer geometry that carries the
diagnosis, so only a left/right flip and small affine changes are safe, and the noise is
multiplicative speckle, the kind the scanner itself makes.

Normalisation constants come from the model's spec, never from here.
"""

from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from retina_core.domain import Modality
from retina_core.models.spec import ModelSpec


def build_train_transform(spec: ModelSpec) -> A.Compose:
    augment = _fundus_augmentations() if spec.modality is Modality.FUNDUS else _oct_augmentations()
    return A.Compose([*augment, *_to_tensor(spec)])


def build_eval_transform(spec: ModelSpec) -> A.Compose:
    return A.Compose(_to_tensor(spec))


def _fundus_augmentations() -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Affine(
            rotate=(-180, 180),
            scale=(0.95, 1.05),
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            p=0.75,
        ),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
        A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=10, val_shift_limit=5, p=0.3),
    ]


def _oct_augmentations() -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(
            rotate=(-5, 5),
            scale=(0.95, 1.05),
            translate_percent=(-0.03, 0.03),
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            p=0.5,
        ),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        A.MultiplicativeNoise(multiplier=(0.9, 1.1), elementwise=True, p=0.3),
    ]


def _to_tensor(spec: ModelSpec) -> list[A.BasicTransform]:
    """Normalise with the spec's constants, then CHW float32; an (H, W) OCT array becomes (1, H, W)."""
    return [
        A.Normalize(mean=spec.mean, std=spec.std, max_pixel_value=255.0),
        ToTensorV2(),
    ]
