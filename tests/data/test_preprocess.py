"""Preprocessing on synthetic fundus and OCT images built here with numpy."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from retina_core.data.preprocess import (
    Preprocessing,
    ben_graham,
    crop_fundus_field,
    decode_image,
    field_mask,
    preprocess,
    resize_pad,
)
from retina_core.domain import Modality


def synthetic_fundus(height: int, width: int, radius: int, *, seed: int = 0) -> np.ndarray:
    """An orange disc with uneven illumination on a noisy black background (JPEG-like border noise)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 12, size=(height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    inside = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 <= radius**2
    shade = 0.6 + 0.4 * xx / width  # illumination falls off to one side
    for channel, level in enumerate((200, 110, 60)):
        img[..., channel][inside] = (level * shade)[inside].astype(np.uint8)
    return img


def _encode(array: np.ndarray, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_field_crop_removes_black_borders() -> None:
    img = synthetic_fundus(120, 200, radius=50)
    cropped = crop_fundus_field(img)
    assert abs(cropped.shape[0] - 101) <= 3 and abs(cropped.shape[1] - 101) <= 3
    assert cropped[cropped.shape[0] // 2, :3].min() > 20  # field reaches the left and right edges
    assert cropped[:3, cropped.shape[1] // 2].min() > 20  # and the top


def test_field_cut_at_top_and_bottom_keeps_full_height() -> None:
    img = synthetic_fundus(100, 220, radius=70)
    cropped = crop_fundus_field(img)
    assert cropped.shape[0] == 100
    assert abs(cropped.shape[1] - 141) <= 3


def test_large_photo_is_cropped_via_a_thumbnail_within_one_percent() -> None:
    cropped = crop_fundus_field(synthetic_fundus(1200, 1800, radius=560))
    assert all(abs(side - 1121) <= 12 for side in cropped.shape[:2])


def test_no_field_returns_input() -> None:
    dark = np.random.default_rng(0).integers(0, 12, size=(40, 50, 3), dtype=np.uint8)
    assert field_mask(dark) is None
    assert crop_fundus_field(dark) is dark


def test_ben_graham_centres_the_field_on_grey() -> None:
    field = crop_fundus_field(synthetic_fundus(160, 160, radius=70))
    out = ben_graham(field)
    assert out.dtype == np.uint8 and out.shape == field.shape
    mask = field_mask(field)
    assert mask is not None
    inner = cv2.erode(mask.astype(np.uint8), np.ones((21, 21), np.uint8)) > 0
    assert abs(float(out[inner].mean()) - 128) < 4  # the illumination gradient is gone
    assert float(field[inner].std()) > 5 * float(out[inner].std())
    assert (out[~mask] == 128).all()


def test_resize_pad_keeps_aspect_with_black_padding() -> None:
    wide = np.full((40, 80, 3), 255, dtype=np.uint8)
    out = resize_pad(wide, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    filled_rows = np.flatnonzero(out.max(axis=(1, 2)) > 0)
    assert (filled_rows[0], filled_rows[-1]) == (8, 23)  # 16 image rows, 8 pad rows each side
    assert out[:8].max() == 0 and out[24:].max() == 0
    tall = resize_pad(np.full((20, 10), 7, dtype=np.uint8), 64)  # greyscale, upscaled
    assert tall.shape == (64, 64)
    assert (tall[:, 16:48] == 7).all() and tall[:, :16].max() == 0


def test_decode_honours_modality_and_exif_orientation() -> None:
    rgb = synthetic_fundus(30, 50, radius=12)
    assert decode_image(_encode(rgb), Modality.FUNDUS).shape == (30, 50, 3)
    assert decode_image(_encode(rgb), Modality.OCT).shape == (30, 50)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    rotated = decode_image(_encode(rgb, "JPEG", exif=exif), Modality.FUNDUS)
    assert rotated.shape == (50, 30, 3)


@pytest.mark.parametrize("bg", [False, True])
def test_preprocess_fundus_end_to_end(bg: bool) -> None:
    data = _encode(synthetic_fundus(120, 200, radius=50))
    how = Preprocessing.for_modality(Modality.FUNDUS, 48, ben_graham=bg)
    out = preprocess(data, how)
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8
    assert out[24, 1].max() > 20 and out[24, 46].max() > 20  # cropped: the field spans the square
    np.testing.assert_array_equal(out, preprocess(data, how))


def test_preprocess_oct_is_greyscale_and_uncropped() -> None:
    scan = np.zeros((40, 80), dtype=np.uint8)
    scan[18:22] = 220  # one bright retinal layer
    out = preprocess(_encode(scan), Preprocessing.for_modality(Modality.OCT, 32, ben_graham=True))
    assert out.shape == (32, 32) and out.dtype == np.uint8
    assert out[:8].max() == 0 and out[15:17].min() > 150  # padded above, the layer in the middle


def fingerprint(modality: Modality, image_size: int, ben_graham: bool) -> str:
    return Preprocessing.for_modality(modality, image_size, ben_graham=ben_graham).fingerprint


def test_fingerprint_changes_with_what_changes_the_output() -> None:
    base = fingerprint(Modality.FUNDUS, 128, False)
    assert base == fingerprint(Modality.FUNDUS, 128, False)
    assert len(base) <= 16
    others = {
        fingerprint(Modality.FUNDUS, 64, False),
        fingerprint(Modality.FUNDUS, 128, True),
        fingerprint(Modality.OCT, 128, False),
        Preprocessing(Modality.FUNDUS, 128, field_crop=False).fingerprint,
    }
    assert base not in others and len(others) == 4
    # Ben Graham does not apply to OCT, so it must not split the OCT cache.
    assert fingerprint(Modality.OCT, 128, True) == fingerprint(Modality.OCT, 128, False)


@pytest.mark.parametrize(
    ("modality", "ben_graham", "stored"),
    [
        (Modality.FUNDUS, False, "p1-fa7290eae8"),
        (Modality.FUNDUS, True, "p1-84d5d29c11"),
        (Modality.OCT, False, "p1-88b831fba6"),
    ],
)
def test_fingerprints_of_the_training_recipes_are_those_already_stored(
    modality: Modality, ben_graham: bool, stored: str
) -> None:
    """Existing preprocessed caches and embedding-cache keys are named by these: they must not move."""
    assert fingerprint(modality, 128, ben_graham) == stored


def test_without_field_crop_the_black_borders_stay() -> None:
    data = _encode(synthetic_fundus(120, 200, radius=50))
    uncropped = preprocess(data, Preprocessing(Modality.FUNDUS, 48))
    assert uncropped[:, 1].max() <= 20  # the photo's black margin is still at the left edge
    assert preprocess(data, Preprocessing.for_modality(Modality.FUNDUS, 48))[24, 1].max() > 20
