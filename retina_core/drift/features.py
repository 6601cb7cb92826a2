"""Per-image statistics a new camera, clinic or protocol moves: size, brightness, contrast,
sharpness and how much of the frame the field fills.

They are computed on a copy resized to :data:`ANALYSIS_SIDE` on its longer side, so that
sharpness (a Laplacian variance, which depends on scale) compares photos of any resolution,
and so that a 3000-px original costs about what a thumbnail does. The size itself comes
from the catalog (width and height were recorded at ingestion) and needs no decoding.
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image, ImageOps

from retina_core.data.preprocess import field_mask

FEATURES = ("size", "brightness", "contrast", "sharpness", "field_fraction")
"""Column order of every feature matrix in this package."""
FEATURE_LABELS = {
    "size": "image size (√(w·h), px)",
    "brightness": "mean brightness in the field (0-255)",
    "contrast": "brightness SD in the field",
    "sharpness": "log Laplacian variance in the field",
    "field_fraction": "share of the frame the field fills",
}
FEATURES_VERSION = "drift-features-v1"
"""Part of the reference cache key: bump when a feature's definition changes."""
ANALYSIS_SIDE = 128
EDGE_ERODE = 2
"""Pixels dropped inside the field's edge before measuring sharpness: the edge itself is the
strongest Laplacian response and says how round the field is, not how sharp the photo is."""


def _grey(data: bytes) -> np.ndarray:
    """Decoded greyscale at :data:`ANALYSIS_SIDE` on the longer side (JPEG decoded at reduced scale)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", (ANALYSIS_SIDE, ANALYSIS_SIDE))  # JPEG: decode at 1/2..1/8 scale, much faster
        grey = np.asarray(ImageOps.exif_transpose(image).convert("L"), dtype=np.uint8)
    height, width = grey.shape
    scale = ANALYSIS_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(grey, size, interpolation=interpolation)


def image_features(data: bytes, width: int, height: int) -> np.ndarray:
    """The :data:`FEATURES` of one image, float64; ``width``/``height`` as catalogued."""
    grey = _grey(data)
    mask = field_mask(grey)
    if mask is None:  # no distinct field (an OCT scan, a washed-out photo): measure the whole frame
        mask = np.ones_like(grey, dtype=bool)
    inner = cv2.erode(mask.astype(np.uint8), np.ones((2 * EDGE_ERODE + 1,) * 2, np.uint8)) > 0
    if not inner.any():
        inner = mask
    values = grey[mask].astype(np.float64)
    laplacian = cv2.Laplacian(grey, cv2.CV_64F)[inner]
    return np.array(
        [
            math.sqrt(width * height),
            values.mean(),
            values.std(),
            math.log1p(laplacian.var()),
            mask.mean(),
        ]
    )
