"""Image-quality gate: inputs a model should not grade are flagged and their prediction withheld.

A model trained on in-focus, well-exposed photos still outputs confident probabilities for a
black frame or a thumbnail; the service says "retake" instead of guessing. The checks are
cheap (a reduced decode where the format allows, after the header passed the pixel budget)
and conservative: they catch unusable images, not mediocre ones.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from PIL import Image

from retina_core.data.preprocess import field_mask
from retina_core.domain import Modality

DARK_MEAN = 20.0
"""Mean intensity (0-255) of the fundus field, or of the whole OCT scan, below which nothing
can be graded: a well-exposed fundus field averages 60-120, an OCT scan 30-80; the
field-finder's own threshold is 20, so a field darker than that is not seen at all."""
CHECK_SIDE = 256
"""Exposure and field presence are judged on a thumbnail about this long: they need the
shape, not the detail, and finding the field costs ~4x less here than at 512 px."""


class QualityFlag(StrEnum):
    NO_FUNDUS_FIELD = "no_fundus_field"
    TOO_DARK = "too_dark"
    TOO_SMALL = "too_small"


QUALITY_TEXT = {
    QualityFlag.NO_FUNDUS_FIELD: "no circular fundus field was found: is this a fundus photograph?",
    QualityFlag.TOO_DARK: "the image is too dark to grade",
    QualityFlag.TOO_SMALL: "the image is too small to grade reliably",
}


def quality_flags(image: Image.Image, modality: Modality, *, min_side: int) -> list[QualityFlag]:
    """The reasons (possibly none) to withhold a prediction.

    ``image`` is as ``Image.open`` leaves it: header read, pixels not decoded yet, so a JPEG
    is decoded here at 1/2 to 1/8 scale (DCT scaling). Exposure and field presence need the
    shape, not the detail; the predictor decodes the full image anyway.
    """
    flags: list[QualityFlag] = []
    if min(image.size) < min_side:  # orientation (EXIF) cannot change the shorter side
        flags.append(QualityFlag.TOO_SMALL)
    target = "RGB" if modality is Modality.FUNDUS else "L"
    image.draft(target, (CHECK_SIDE, CHECK_SIDE))  # JPEG only; other formats ignore it
    small = image if image.mode == target else image.convert(target)
    factor = max(1, max(small.size) // CHECK_SIDE)
    if factor > 1:
        small = small.reduce(factor)  # box averaging: keeps the means, ~10x cheaper than a resample
    pixels = np.asarray(small, dtype=np.uint8)
    region: np.ndarray = pixels
    if modality is Modality.FUNDUS:
        mask = field_mask(pixels)
        if mask is None:
            flags.append(QualityFlag.NO_FUNDUS_FIELD)
        else:
            region = pixels[mask]
    if float(region.mean()) < DARK_MEAN:
        flags.append(QualityFlag.TOO_DARK)
    return flags
