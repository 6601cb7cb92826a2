"""The deterministic half of the input pipeline, done once per (image, size) and cached.

Decoding, cropping the fundus field and resizing are the expensive, repeatable part of
loading an image; doing them once and caching the uint8 result (see ``image_cache``) keeps
epochs cheap. Random augmentation stays in ``transforms`` and runs on these arrays.

Every constant that shapes the output goes into :func:`preprocess_fingerprint`, so editing
one changes the cache key instead of silently mixing old and new arrays. Bump
``PREPROCESS_VERSION`` when the *code* changes in a way the constants don't show.
"""

from __future__ import annotations

import hashlib
import io
import json
import math

import cv2
import numpy as np
from PIL import Image, ImageOps

from retina_core.domain import Modality

PREPROCESS_VERSION = 1

FIELD_THRESHOLD = 20
"""Blurred intensity (0–255) above which a pixel is inside the fundus field. Black borders
of JPEG fundus photos carry noise up to ~15; the darkest real field edge is well above 20."""
FIELD_BLUR_FRAC = 0.01
"""Median-blur kernel for the field mask, as a fraction of the longer side: removes noise
specks without moving the field's edge (a Gaussian blur would widen the crop)."""
FIELD_DETECT_SIDE = 512
"""The field is found on a thumbnail this long: the mask needs the shape, not the detail,
and at full resolution (~3000 px photos) it would be the slowest step of preprocessing."""
MIN_FIELD_FRAC = 0.05
"""A field smaller than this fraction of the image is not a field: keep the image as is."""
BEN_GRAHAM_SIGMA_FRAC = 1 / 60
"""Ben Graham's sigma: radius/30 in the original Kaggle solution, i.e. diameter/60."""
BEN_GRAHAM_ERODE_FRAC = 0.05
"""The blur smears the black border into the rim; drop this fraction of the diameter (the
original kept 90% of the radius) so no bright ring remains."""
BEN_GRAHAM_BACKGROUND = 128
"""Outside the field after Ben Graham: the normalised image's neutral grey."""


def decode_image(data: bytes, modality: Modality) -> np.ndarray:
    """Fundus → RGB (H, W, 3) uint8; OCT → greyscale (H, W) uint8. Honours EXIF orientation."""
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image)
        mode = "RGB" if Modality(modality) is Modality.FUNDUS else "L"
        return np.asarray(upright.convert(mode), dtype=np.uint8).copy()


def field_mask(rgb: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the circular fundus field (largest bright component), or None if absent."""
    gray = rgb.max(axis=2) if rgb.ndim == 3 else rgb
    kernel = 2 * round(FIELD_BLUR_FRAC * max(gray.shape) / 2) + 1
    blurred = cv2.medianBlur(np.ascontiguousarray(gray), max(3, kernel))
    bright = (blurred > FIELD_THRESHOLD).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < MIN_FIELD_FRAC * gray.size:
        return None
    return labels == largest


def field_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the field's bounding box, or None when no field is found.

    Found on a thumbnail for speed; a field cut at the top or bottom spans the full height.
    """
    height, width = rgb.shape[:2]
    thumb = _fit(rgb, FIELD_DETECT_SIDE) if max(height, width) > FIELD_DETECT_SIDE else rgb
    mask = field_mask(thumb)
    if mask is None:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    fy, fx = height / thumb.shape[0], width / thumb.shape[1]
    top, bottom = int(rows[0] * fy), min(height, math.ceil((rows[-1] + 1) * fy))
    left, right = int(cols[0] * fx), min(width, math.ceil((cols[-1] + 1) * fx))
    return top, bottom, left, right


def crop_fundus_field(rgb: np.ndarray) -> np.ndarray:
    """Crop to the field's bounding box, dropping black borders; unchanged when no field is found."""
    box = field_box(rgb)
    if box is None:
        return rgb
    top, bottom, left, right = box
    return rgb[top:bottom, left:right]


def ben_graham(rgb: np.ndarray, sigma_frac: float = BEN_GRAHAM_SIGMA_FRAC) -> np.ndarray:
    """``4·img − 4·GaussianBlur(img) + 128`` inside the field, grey outside.

    Subtracting the local average removes the illumination and pigmentation differences
    between cameras and patients while keeping lesions (small, high-contrast) visible;
    the standard trick from the 2015 Kaggle DR winner. Expects a field-cropped image.
    """
    diameter = max(rgb.shape[:2])
    blurred = cv2.GaussianBlur(rgb, (0, 0), max(1.0, sigma_frac * diameter))
    out = cv2.addWeighted(rgb, 4.0, blurred, -4.0, 128.0)
    mask = field_mask(rgb)
    if mask is None:
        return out
    radius = max(1, round(BEN_GRAHAM_ERODE_FRAC * diameter))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    inner = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    out[~inner] = BEN_GRAHAM_BACKGROUND
    return out


_ben_graham = ben_graham  # `preprocess` takes a flag of the same name


def resize_pad(img: np.ndarray, size: int) -> np.ndarray:
    """Fit the longer side to ``size`` keeping the aspect ratio, then pad to a centred square
    with zeros: stretching would turn the round field (and lesions) into ellipses."""
    resized = _fit(img, size)
    new_h, new_w = resized.shape[:2]
    out = np.zeros((size, size, *img.shape[2:]), dtype=img.dtype)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized.reshape(new_h, new_w, *img.shape[2:])
    return out


def _fit(img: np.ndarray, side: int) -> np.ndarray:
    """Resize so the longer side is ``side``, keeping the aspect ratio; INTER_AREA when shrinking."""
    height, width = img.shape[:2]
    scale = side / max(height, width)
    if scale == 1:
        return img
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (new_w, new_h), interpolation=interpolation)


def preprocess(data: bytes, modality: Modality, size: int, *, ben_graham: bool = False) -> np.ndarray:
    """Original bytes → the cached training input: uint8 (size, size, 3) fundus or (size, size) OCT.

    ``ben_graham`` applies to fundus photos only and is ignored for OCT.
    """
    modality = Modality(modality)
    img = decode_image(data, modality)
    if modality is Modality.FUNDUS:
        img = crop_fundus_field(img)
        if ben_graham:  # sigma is relative to the field, so the target size gives the same effect, cheaply
            img = _ben_graham(_fit(img, size))
    return resize_pad(img, size)


def preprocess_mask(image: bytes, mask: bytes, modality: Modality, size: int) -> np.ndarray:
    """A lesion mask put through the image's own geometry (field crop, resize, pad): bool (size, size).

    Grad-CAM maps live in the model's input space, so the pointing game needs the mask
    there too; colour normalisation doesn't move pixels and is irrelevant here.
    """
    modality = Modality(modality)
    lesions = decode_image(mask, Modality.OCT) > 0
    if modality is Modality.FUNDUS:
        box = field_box(decode_image(image, modality))
        if box is not None:
            top, bottom, left, right = box
            lesions = lesions[top:bottom, left:right]
    return resize_pad(lesions.astype(np.uint8) * 255, size) > 127


def preprocess_fingerprint(modality: Modality, size: int, ben_graham: bool) -> str:
    """Short id of everything that shapes :func:`preprocess`'s output; part of cache keys."""
    modality = Modality(modality)
    params: dict[str, object] = {
        "version": PREPROCESS_VERSION,
        "modality": str(modality),
        "size": int(size),
    }
    if modality is Modality.FUNDUS:
        params["field"] = [FIELD_THRESHOLD, FIELD_BLUR_FRAC, FIELD_DETECT_SIDE, MIN_FIELD_FRAC]
        if ben_graham:
            params["ben_graham"] = [BEN_GRAHAM_SIGMA_FRAC, BEN_GRAHAM_ERODE_FRAC, BEN_GRAHAM_BACKGROUND]
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return f"p{PREPROCESS_VERSION}-{digest[:10]}"
