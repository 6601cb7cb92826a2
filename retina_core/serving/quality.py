"""Image-quality gate: inputs a model should not grade are flagged and their prediction withheld.

A model trained on in-focus, well-exposed photos still outputs confident probabilities for a
black frame or a thumbnail; the service says "retake" instead of guessing. The checks are
cheap (one decode, already validated against the pixel budget) and conservative: they catch
unusable images, not mediocre ones.
"""

from __future__ import annotations

from enum import StrEnum

import cv2
import numpy as np

from retina_core.data.preprocess import decode_image, field_mask
from retina_core.domain import Modality

DARK_MEAN = 20.0
"""Mean intensity (0-255) of the fundus field, or of the whole OCT scan, below which nothing
can be graded: a well-exposed fundus field averages 60-120, an OCT scan 30-80; the
field-finder's own threshold is 20, so a field darker than that is not seen at all."""
CHECK_SIDE = 512
"""Exposure and field are judged on a thumbnail this long: they need the shape, not the detail."""


class QualityFlag(StrEnum):
    NO_FUNDUS_FIELD = "no_fundus_field"
    TOO_DARK = "too_dark"
    TOO_SMALL = "too_small"


QUALITY_TEXT = {
    QualityFlag.NO_FUNDUS_FIELD: "no circular fundus field was found: is this a fundus photograph?",
    QualityFlag.TOO_DARK: "the image is too dark to grade",
    QualityFlag.TOO_SMALL: "the image is too small to grade reliably",
}


def quality_flags(data: bytes, modality: Modality, *, min_side: int) -> list[QualityFlag]:
    """The reasons (possibly none) to withhold a prediction for already-validated image bytes."""
    image = decode_image(data, modality)
    flags: list[QualityFlag] = []
    if min(image.shape[:2]) < min_side:
        flags.append(QualityFlag.TOO_SMALL)
    scale = CHECK_SIDE / max(image.shape[:2])
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    region: np.ndarray = image
    if modality is Modality.FUNDUS:
        mask = field_mask(image)
        if mask is None:
            flags.append(QualityFlag.NO_FUNDUS_FIELD)
        else:
            region = image[mask]
    if float(region.mean()) < DARK_MEAN:
        flags.append(QualityFlag.TOO_DARK)
    return flags
