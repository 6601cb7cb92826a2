from __future__ import annotations

import io

import pytest
from PIL import Image

from retina_core.config import IngestSettings
from retina_core.data.rejections import Reason, Rejection
from retina_core.data.validation import ImageFacts, sniff_format, validate_image
from retina_core.domain import Modality
from tests.support.files import image_bytes, png_bomb

SETTINGS = IngestSettings(max_pixels=1_000_000, max_fundus_bytes=200_000, max_oct_bytes=200_000, min_side=16)


def reason(data: bytes, modality: Modality = Modality.FUNDUS) -> Reason:
    result = validate_image(data, modality, SETTINGS)
    assert isinstance(result, Rejection), result
    return result.reason


def test_accepts_png_and_jpeg_and_hashes_content() -> None:
    png = image_bytes(fmt="PNG")
    facts = validate_image(png, Modality.FUNDUS, SETTINGS)
    assert isinstance(facts, ImageFacts)
    assert (facts.format, facts.width, facts.height) == ("png", 48, 40)
    jpeg = validate_image(image_bytes(mode="L", fmt="JPEG"), Modality.OCT, SETTINGS)
    assert isinstance(jpeg, ImageFacts) and jpeg.format == "jpeg" and jpeg.mode == "L"
    assert facts.sha256 != jpeg.sha256 and len(facts.sha256) == 64


def test_content_is_sniffed_not_trusted_from_extension() -> None:
    assert sniff_format(image_bytes(fmt="JPEG")) == "JPEG"
    assert sniff_format(b"GIF89a....") is None
    assert reason(b"<html>not an image</html>") is Reason.NOT_AN_IMAGE


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", Reason.EMPTY),
        (b"\x00" * 300_000, Reason.TOO_LARGE),
        (image_bytes()[:200], Reason.CORRUPT),
        (image_bytes(fmt="JPEG")[:300], Reason.CORRUPT),
        (png_bomb(2000, 1000), Reason.TOO_MANY_PIXELS),
        (image_bytes(size=(8, 40)), Reason.TOO_SMALL),
    ],
    ids=["empty", "too-large", "truncated-png", "truncated-jpeg", "bomb", "too-small"],
)
def test_rejections(data: bytes, expected: Reason) -> None:
    assert reason(data) is expected


def test_bomb_is_refused_before_decoding() -> None:
    # 40k x 40k would need 1.6 GB to decode; the header check refuses it first.
    data = png_bomb(40_000, 40_000)
    assert len(data) < SETTINGS.max_fundus_bytes
    assert reason(data) is Reason.TOO_MANY_PIXELS


def test_unsupported_mode() -> None:
    img = Image.new("1", (32, 32))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert reason(buf.getvalue(), Modality.OCT) is Reason.UNSUPPORTED_MODE
