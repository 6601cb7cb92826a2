"""Decide whether a file's bytes are a usable image, reading them exactly once.

The extension is never trusted: the format is sniffed from magic bytes, the header is
checked against the pixel budget *before* decoding (decompression bombs), and then the
whole image is decoded so truncation is caught here rather than mid-training.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from retina_core.config import IngestSettings
from retina_core.data.rejections import Reason, Rejection
from retina_core.domain import Modality

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
_EXT = {"PNG": "png", "JPEG": "jpeg", "TIFF": "tiff", "BMP": "bmp"}
_CONVERTIBLE = {
    Modality.FUNDUS: {"RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "I"},
    Modality.OCT: {"L", "LA", "RGB", "RGBA", "P", "I;16", "I", "F"},
}


@dataclass(frozen=True)
class ImageFacts:
    sha256: str
    format: str
    """File extension used in the curated store: png, jpeg, tiff or bmp."""
    width: int
    height: int
    mode: str


def sniff_format(data: bytes) -> str | None:
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def validate_image(data: bytes, modality: Modality, settings: IngestSettings) -> ImageFacts | Rejection:
    if not data:
        return Rejection(Reason.EMPTY, "file is empty (0 bytes)")
    if len(data) > settings.max_file_bytes:
        return Rejection(Reason.TOO_LARGE, f"{len(data)} bytes exceeds the {settings.max_file_bytes} limit")
    fmt = sniff_format(data)
    if fmt is None:
        return Rejection(Reason.NOT_AN_IMAGE, "content is not PNG, JPEG, TIFF or BMP")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size
            if width * height > settings.max_pixels:
                return Rejection(
                    Reason.TOO_MANY_PIXELS,
                    f"{width}x{height} = {width * height} pixels exceeds the {settings.max_pixels} limit",
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Rejection(Reason.TOO_MANY_PIXELS, str(exc))
    except UnidentifiedImageError:
        return Rejection(Reason.NOT_AN_IMAGE, f"looks like {fmt} but cannot be identified")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return Rejection(Reason.CORRUPT, f"cannot decode {fmt}: {exc}")
    if min(width, height) < settings.min_side:
        return Rejection(Reason.TOO_SMALL, f"{width}x{height} is smaller than {settings.min_side} px")
    if image.mode not in _CONVERTIBLE[modality]:
        return Rejection(Reason.UNSUPPORTED_MODE, f"mode {image.mode} cannot be used as {modality} input")
    return ImageFacts(
        sha256=hashlib.sha256(data).hexdigest(),
        format=_EXT[fmt],
        width=width,
        height=height,
        mode=image.mode,
    )
