"""A shift knob for the generator: another camera, another case mix.

Drift checks need data that differs from the training set in a known way. A camera shift
is applied to each finished photo or scan, after rendering, so the renderers and their
calibrated difficulty stay untouched and an identity shift writes the very same bytes:

- ``brightness`` multiplies the image (another sensor gain or flash);
- ``blur_sigma`` adds a Gaussian blur in output pixels (another lens, a dirty one);
- ``field_scale`` shrinks the picture inside a black frame of the same size (a camera whose
  field of view fills less of the sensor); the lesion mask follows the same geometry.

A case-mix shift replaces the APTOS grade or Kermany class proportions.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class CameraShift(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    brightness: float = Field(1.0, gt=0.0, le=4.0, description="Multiplier of every pixel value.")
    blur_sigma: float = Field(0.0, ge=0.0, le=20.0, description="Extra Gaussian blur, output pixels.")
    field_scale: float = Field(
        1.0, gt=0.1, le=1.0, description="Picture size inside the frame (1 = as drawn)."
    )

    @property
    def identity(self) -> bool:
        return self.brightness == 1.0 and self.blur_sigma == 0.0 and self.field_scale == 1.0


class Shift(BaseModel):
    """What differs from the default generator; the default differs in nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    camera: CameraShift = Field(default_factory=CameraShift)
    fundus_grade_weights: tuple[float, float, float, float, float] | None = Field(
        None, description="Share of each DR grade 0-4 instead of APTOS's."
    )
    oct_class_weights: tuple[float, float, float, float] | None = Field(
        None, description="Share of CNV, DME, DRUSEN, NORMAL instead of Kermany's."
    )


def _shrink(image: np.ndarray, scale: float, interpolation: int) -> np.ndarray:
    height, width = image.shape[:2]
    inner = cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=interpolation
    )
    out = np.zeros_like(image)
    top, left = (height - inner.shape[0]) // 2, (width - inner.shape[1]) // 2
    out[top : top + inner.shape[0], left : left + inner.shape[1]] = inner
    return out


def apply_camera(image: np.ndarray, mask: np.ndarray, camera: CameraShift) -> tuple[np.ndarray, np.ndarray]:
    """The photo (uint8) and its lesion mask as another camera would have produced them."""
    if camera.identity:
        return image, mask
    out = image
    if camera.field_scale != 1.0:
        out = _shrink(out, camera.field_scale, cv2.INTER_AREA)
        mask = _shrink(mask, camera.field_scale, cv2.INTER_NEAREST)
    if camera.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), camera.blur_sigma)
    if camera.brightness != 1.0:
        out = np.clip(out.astype(np.float32) * camera.brightness, 0, 255).astype(np.uint8)
    return out, mask
