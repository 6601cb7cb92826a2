"""Builders for small landing folders, including deliberately broken files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def image_bytes(
    size: tuple[int, int] = (48, 40), *, mode: str = "RGB", fmt: str = "PNG", seed: int = 0
) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 255, size=(size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode=mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def png_bomb(width: int, height: int) -> bytes:
    """A few hundred bytes whose PNG header claims width x height pixels.

    A real bomb's IDAT would inflate to width*height bytes; the header alone is what the
    validator must refuse on, before any decoding, so the payload is a zlib stream of a
    single row (decoding it would fail long after allocating the whole image).
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def aptos_folder(root: Path, rows: list[tuple[str, str]], files: dict[str, bytes]) -> Path:
    """``rows`` are (id_code, diagnosis) CSV rows; ``files`` maps id_code -> bytes."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["id_code,diagnosis", *[f"{i},{d}" for i, d in rows]]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    for id_code, data in files.items():
        write(root / "train_images" / f"{id_code}.png", data)
    return root
