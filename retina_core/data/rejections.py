"""Why an input was set aside. Codes are stable (scripts match on them); details are for people."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


class Reason(StrEnum):
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    NOT_AN_IMAGE = "not_an_image"
    CORRUPT = "corrupt"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_SMALL = "too_small"
    UNSUPPORTED_MODE = "unsupported_mode"
    LABEL_MISSING = "label_missing"
    LABEL_NOT_A_NUMBER = "label_not_a_number"
    LABEL_OUT_OF_RANGE = "label_out_of_range"
    LABEL_CONFLICT = "label_conflict"
    FILE_MISSING = "file_missing"
    PATH_ESCAPE = "path_escape"
    CLASS_MISMATCH = "class_mismatch"
    UNKNOWN_CLASS = "unknown_class"
    UNPARSEABLE_NAME = "unparseable_name"
    UNLABELED = "unlabeled"
    BAD_ROW = "bad_row"
    UNREADABLE = "unreadable"
    SYMLINK = "symlink"
    BAD_NAME = "bad_name"
    """The file name is not UTF-8 text or holds control characters: it is recorded escaped."""
    DICOM_INVALID = "dicom_invalid"
    DICOM_UNSUPPORTED_SOP_CLASS = "dicom_unsupported_sop_class"
    DICOM_NO_PIXELS = "dicom_no_pixels"
    DICOM_COMPRESSED_UNSUPPORTED = "dicom_compressed_unsupported"


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


class SourceError(Exception):
    """The source location itself is unusable (no manifest, wrong layout): nothing was ingested."""


def printable(text: str) -> str:
    """``text`` in a form every database, log and terminal takes: undecodable bytes of a
    file name (Python's surrogate escapes) become ``\\xff``, control characters and NUL
    become ``\\x00`` escapes. Everything else, non-ASCII letters included, is unchanged."""
    if not _UNPRINTABLE.search(text):
        return text
    return _UNPRINTABLE.sub(lambda m: _escape(m.group()), text)


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode carries it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
