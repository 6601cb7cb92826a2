"""Why an input was set aside. Codes are stable (scripts match on them); details are for people."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
