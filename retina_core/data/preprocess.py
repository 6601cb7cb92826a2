"""The deterministic half of the input pipeline, done once per (image, size) and cached.

Decoding, cropping the fundus field and resizing are the expensive, repeatable part of
loading an image; doing them once and caching the uint8 result (see ``image_cache``) keeps
epochs cheap. Random augmentation stays in ``transforms`` and runs on these arrays.

What is done to an image is a :class:`Preprocessing`, which a model's spec carries: a model
is always fed images prepared the way it was trained. Every constant that shapes the
output goes into :attr:`Preprocessing.fingerprint`, so editing one changes the cache key
instead of silently mixing old and new arrays. Bump ``PREPROCESS_VERSION`` when the *code*
changes in a way the constants don't show.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Preprocessing:
    """Every deterministic step from an image file to the uint8 array a model is fed.

    Part of a model's spec, because a model must see images prepared as it was trained
    (a model trained on Ben Graham-normalised photos gives confident nonsense on raw ones),
    and the identity of the preprocessed cache.
    """

    modality: Modality
    image_size: int
    """Square input side in pixels."""
    field_crop: bool = False
    """Crop to the fundus field's bounding box first, dropping the black borders."""
    ben_graham: bool = False
    """Ben Graham local-average colour normalisation of the cropped field."""

    @classmethod
    def for_modality(
        cls, modality: Modality | str, image_size: int, *, ben_graham: bool = False
    ) -> Preprocessing:
        """The recipe models are trained with: fundus photos are field-cropped (and Ben Graham-
        normalised when asked); OCT scans are only resized, so ``ben_graham`` is ignored for them."""
        fundus = Modality(modality) is Modality.FUNDUS
        return cls(Modality(modality), int(image_size), field_crop=fundus, ben_graham=ben_graham and fundus)

    @property
    def shape(self) -> tuple[int, ...]:
        """(S, S, 3) for fundus photos, (S, S) for greyscale OCT scans."""
        side = (self.image_size, self.image_size)
        return (*side, 3) if self.modality is Modality.FUNDUS else side

    @property
    def fingerprint(self) -> str:
        """Short id of everything that shapes :func:`preprocess`'s output; part of cache keys."""
        params: dict[str, object] = {
            "version": PREPROCESS_VERSION,
            "modality": str(self.modality),
            "size": self.image_size,  # the key's name is part of every fingerprint already stored
        }
        if self.field_crop:
            params["field"] = [FIELD_THRESHOLD, FIELD_BLUR_FRAC, FIELD_DETECT_SIDE, MIN_FIELD_FRAC]
        if self.ben_graham:
            params["ben_graham"] = [BEN_GRAHAM_SIGMA_FRAC, BEN_GRAHAM_ERODE_FRAC, BEN_GRAHAM_BACKGROUND]
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        return f"p{PREPROCESS_VERSION}-{digest[:10]}"


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


def resize_pad(img: np.ndarray, side: int) -> np.ndarray:
    """Fit the longer side to ``side`` keeping the aspect ratio, then pad to a centred square
    with zeros: stretching would turn the round field (and lesions) into ellipses."""
    resized = _fit(img, side)
    new_h, new_w = resized.shape[:2]
    out = np.zeros((side, side, *img.shape[2:]), dtype=img.dtype)
    top, left = (side - new_h) // 2, (side - new_w) // 2
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


def preprocess(data: bytes, how: Preprocessing) -> np.ndarray:
    """Original bytes → the model input ``how`` describes: uint8 (S, S, 3) fundus or (S, S) OCT."""
    img = decode_image(data, how.modality)
    if how.field_crop:
        img = crop_fundus_field(img)
    if how.ben_graham:  # sigma is relative to the field, so the target size gives the same effect, cheaply
        img = ben_graham(_fit(img, how.image_size))
    return resize_pad(img, how.image_size)


def preprocess_mask(image: bytes, mask: bytes, how: Preprocessing) -> np.ndarray:
    """A lesion mask put through the image's own geometry (field crop, resize, pad): bool (S, S).

    Grad-CAM maps live in the model's input space, so the pointing game needs the mask
    there too; colour normalisation doesn't move pixels and is irrelevant here.
    """
    lesions = decode_image(mask, Modality.OCT) > 0
    if how.field_crop:
        box = field_box(decode_image(image, how.modality))
        if box is not None:
            top, bottom, left, right = box
            lesions = lesions[top:bottom, left:right]
    return resize_pad(lesions.astype(np.uint8) * 255, how.image_size) > 127
