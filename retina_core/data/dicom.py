"""DICOM from clinic devices: Ophthalmic Photography as fundus photos, Ophthalmic Tomography as OCT volumes.

A DICOM file carries the patient in its header, so what leaves this module is chosen, never
copied: the decoded pixels (as PNG, the file itself is never stored, not even in quarantine),
the pseudonym of ``PatientID`` (the splits' keyed hash), the eye, the acquisition date, and a
keyed hash of the instance as the volume id. Names, birth dates and every other header field
stay in the bytes read here and are dropped with them; rejection details name the problem,
never a header value.

One file may give many images: each frame of an OCT volume is a B-scan, catalogued with its
volume id and frame index, so the eye-level evaluation can put the volume back together.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import iter_pixels
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from retina_core.config import IngestSettings
from retina_core.data.ingest import FileOutcome, curated_key, quarantine, read_landing_file
from retina_core.data.rejections import Reason, Rejection, SourceError
from retina_core.data.sources import EYES, Candidate, is_hidden, pair_label, read_manifest
from retina_core.data.splits import pseudonym
from retina_core.data.validation import validate_image
from retina_core.domain import Modality, Source
from retina_core.storage import LocalObjectStore, ObjectStore, StorageError

log = logging.getLogger(__name__)

SOP_CLASSES: dict[str, Modality] = {
    "1.2.840.10008.5.1.4.1.1.77.1.5.1": Modality.FUNDUS,  # Ophthalmic Photography 8 Bit Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.2": Modality.FUNDUS,  # Ophthalmic Photography 16 Bit Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.5.4": Modality.OCT,  # Ophthalmic Tomography Image Storage
}
_PHOTOMETRIC = {"RGB", "YBR_FULL", "YBR_FULL_422", "MONOCHROME1", "MONOCHROME2"}
_NOT_IMAGES = {".csv", ".json", ".txt", ".md", ".xml"}
_LATERALITY = {"R": "OD", "L": "OS"}
LABELS_FILE = "labels.csv"


def is_dicom(data: bytes) -> bool:
    """Part 10 files carry ``DICM`` after a 128-byte preamble; that is what we accept."""
    return data[128:132] == b"DICM"


@dataclass(frozen=True)
class DicomFacts:
    """The only header facts that leave this module; nothing in here identifies a person."""

    modality: Modality
    patient: str
    """Pseudonym of PatientID (or of the instance when the file names no patient)."""
    instance: str
    """Pseudonym of SOPInstanceUID: the label key and, for a volume, the volume id."""
    eye: str | None
    acquired_on: str | None
    frames: int
    rows: int
    columns: int


@dataclass(frozen=True)
class LabelBook:
    """Sidecar labels, keyed by pseudonyms only: the raw identifiers are dropped on reading.

    ``labels.csv`` has a ``label`` column and either ``sop_instance_uid`` or ``patient_id`` +
    ``eye``; the instance key wins where both match. A label is a DR grade for photos and an
    OCT class (name or number) for tomography, checked once the file's modality is known.
    """

    by_instance: Mapping[str, str] = field(default_factory=dict)
    by_patient_eye: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def raw_label(self, facts: DicomFacts) -> str | None:
        found = self.by_instance.get(facts.instance)
        if found is None and facts.eye is not None:
            found = self.by_patient_eye.get((facts.patient, facts.eye))
        return found


@dataclass(frozen=True)
class DicomCandidate(Candidate):
    """A DICOM file before it is opened: its modality is only known from its header."""

    labels: LabelBook = field(default_factory=LabelBook)


def read_label_book(landing: ObjectStore, labels: str | None, key: str, limits: IngestSettings) -> LabelBook:
    """The sidecar CSV named by ``--labels`` (a local file or a key in the landing), else ``labels.csv``.

    Read within the manifest limits; a row with an over-long field keys nothing and is skipped
    (the images it would have labelled land unlabelled rather than sinking the ingest)."""
    if labels is None:
        if not landing.exists(LABELS_FILE):
            return LabelBook()
        parsed = read_manifest(landing, LABELS_FILE, {"label"}, limits)
    elif Path(labels).expanduser().is_file():
        path = Path(labels).expanduser()
        parsed = read_manifest(LocalObjectStore(path.parent.resolve()), path.name, {"label"}, limits)
    elif _in_landing(landing, labels):
        parsed = read_manifest(landing, labels, {"label"}, limits)
    else:
        raise SourceError(f"labels file {labels} does not exist")
    rows = [row for _, row, problem in parsed if problem is None]
    by_instance: dict[str, str] = {}
    by_patient_eye: dict[tuple[str, str], str] = {}
    for row in rows:
        uid, patient = row.get("sop_instance_uid", ""), row.get("patient_id", "")
        eye = EYES.get(row.get("eye", "").upper())
        if uid:
            by_instance[pseudonym(uid, key)] = row["label"]
        elif patient and eye:
            by_patient_eye[(pseudonym(patient, key), eye)] = row["label"]
    if rows and not (by_instance or by_patient_eye):
        raise SourceError("labels file has no row keyed by sop_instance_uid or by patient_id + eye")
    return LabelBook(by_instance, by_patient_eye)


def _in_landing(landing: ObjectStore, key: str) -> bool:
    try:
        return landing.exists(key)
    except StorageError:  # an absolute or escaping path is simply not a key of this landing
        return False


def scan_dicom(landing: ObjectStore, labels: LabelBook) -> Iterator[DicomCandidate]:
    """Every file under the landing but the sidecars; most clinic exports have no ``.dcm`` suffix."""
    found = False
    for info in landing.list(""):
        suffix = PurePosixPath(info.key).suffix.lower()
        if is_hidden(info.key) or suffix in _NOT_IMAGES or PurePosixPath(info.key).name == "DICOMDIR":
            continue
        found = True
        yield DicomCandidate(Source.DICOM, info.key, Modality.FUNDUS, None, None, labels=labels)
    if not found:
        raise SourceError("no files to read as DICOM")


def _date(ds: Dataset) -> str | None:
    for keyword in ("AcquisitionDateTime", "AcquisitionDate", "ContentDate", "StudyDate"):
        value = str(ds.get(keyword, "") or "")[:8]
        if len(value) == 8 and value.isdigit():
            return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return None


def _eye(ds: Dataset) -> str | None:
    for keyword in ("ImageLaterality", "Laterality"):
        eye = _LATERALITY.get(str(ds.get(keyword, "") or "").strip().upper())
        if eye is not None:
            return eye
    return None


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    try:
        value = ds.get(keyword, default)
        return default if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def read_header(data: bytes, key: str, settings: IngestSettings) -> tuple[Dataset, DicomFacts] | Rejection:
    """Parse and check everything that can be checked before a pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings may quote header values
            ds = pydicom.dcmread(io.BytesIO(data))
            sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    except InvalidDicomError:
        return Rejection(Reason.DICOM_INVALID, "not a DICOM Part 10 file (no DICM preamble)")
    except Exception as exc:  # any parser failure is a bad file, never a crash
        return Rejection(Reason.DICOM_INVALID, f"the DICOM header does not parse ({type(exc).__name__})")
    modality = SOP_CLASSES.get(sop)
    if modality is None:
        return Rejection(
            Reason.DICOM_UNSUPPORTED_SOP_CLASS,
            f"SOP class {sop or 'missing'} is not Ophthalmic Photography or Ophthalmic Tomography",
        )
    if "PixelData" not in ds:
        return Rejection(Reason.DICOM_NO_PIXELS, "the file holds no pixel data")
    rows, columns, frames = _int(ds, "Rows"), _int(ds, "Columns"), _int(ds, "NumberOfFrames", 1)
    if not rows or not columns or not frames or min(rows, columns, frames) < 1:
        return Rejection(Reason.DICOM_INVALID, "Rows, Columns or NumberOfFrames is missing or not positive")
    if rows * columns * frames > settings.max_pixels:
        return Rejection(
            Reason.TOO_MANY_PIXELS,
            f"{frames} frame(s) of {columns}x{rows} exceed the {settings.max_pixels} pixel limit",
        )
    if str(ds.get("PhotometricInterpretation", "")) not in _PHOTOMETRIC:
        return Rejection(Reason.UNSUPPORTED_MODE, "photometric interpretation is not RGB, YBR or MONOCHROME")
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    problem = _check_pixel_data(ds, syntax, rows * columns * frames)
    if problem is not None:
        return problem
    instance = str(ds.get("SOPInstanceUID", "") or "")
    patient_id = str(ds.get("PatientID", "") or "").strip()
    facts = DicomFacts(
        modality=modality,
        patient=pseudonym(patient_id or f"instance:{instance}", key),
        instance=pseudonym(instance, key),
        eye=_eye(ds),
        acquired_on=_date(ds),
        frames=frames,
        rows=rows,
        columns=columns,
    )
    return ds, facts


def _check_pixel_data(ds: Dataset, syntax: UID, pixels: int) -> Rejection | None:
    if syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except (NotImplementedError, ValueError):
            available = False
        if not available:
            return Rejection(
                Reason.DICOM_COMPRESSED_UNSUPPORTED, f"no installed decoder for transfer syntax {syntax}"
            )
        return None
    samples, bits = _int(ds, "SamplesPerPixel", 1) or 1, _int(ds, "BitsAllocated", 8) or 8
    expected = pixels * samples * bits // 8
    if len(ds.PixelData) < expected:
        return Rejection(
            Reason.DICOM_INVALID,
            f"pixel data holds {len(ds.PixelData)} bytes, fewer than the {expected} the header declares",
        )
    return None


def _to_uint8(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """8 bits per sample, as the PNG pipeline expects: 16-bit data keeps its top bits stored."""
    if frame.dtype != np.uint8:
        shift = max((_int(ds, "BitsStored", 8) or 8) - 8, 0)
        frame = np.clip(frame.astype(np.int64) >> shift, 0, 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        frame = 255 - frame  # MONOCHROME1 shows 0 as white
    return frame


def iter_frames(data: bytes, ds: Dataset) -> Iterator[np.ndarray]:
    """Decoded frames one at a time (memory holds one frame), colour converted to RGB by pydicom."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for frame in iter_pixels(io.BytesIO(data)):
            yield _to_uint8(np.asarray(frame), ds)


def frame_png(frame: np.ndarray) -> bytes:
    """PNG bytes of one frame; PIL writes no metadata we did not give it, so nothing leaks."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_frames(
    data: bytes, key: str, settings: IngestSettings
) -> tuple[DicomFacts, list[bytes]] | Rejection:
    """The file's facts and its frames as PNG bytes; a rejection when either cannot be had."""
    header = read_header(data, key, settings)
    if isinstance(header, Rejection):
        return header
    ds, facts = header
    try:
        frames = [frame_png(frame) for frame in iter_frames(data, ds)]
    except Exception as exc:  # decoder failures of every kind mean a bad file
        return Rejection(Reason.DICOM_INVALID, f"the pixel data does not decode ({type(exc).__name__})")
    if len(frames) != facts.frames:
        return Rejection(
            Reason.DICOM_INVALID, f"{len(frames)} frame(s) decoded where the header declares {facts.frames}"
        )
    return facts, frames


def _reject(store: ObjectStore, candidate: Candidate, rejection: Rejection) -> FileOutcome:
    """Quarantine the reason only: the DICOM bytes carry the patient and are never stored."""
    key = quarantine(store, candidate, rejection, None)
    log.info("quarantined %s: %s", candidate.path, rejection.reason.value)
    return FileOutcome(candidate, rejection=rejection, object_key=key)


def process_dicom(
    candidate: DicomCandidate, landing: ObjectStore, store: ObjectStore, settings: IngestSettings, key: str
) -> list[FileOutcome]:
    """One outcome per decoded frame, or one quarantined outcome for the file; never raises for it."""
    base = Candidate(candidate.source, candidate.path, candidate.modality, None, None)
    # the modality is only known from the header: the larger per-modality limit applies to the file
    data = read_landing_file(landing, candidate.path, max(settings.max_fundus_bytes, settings.max_oct_bytes))
    if isinstance(data, Rejection):
        return [_reject(store, base, data)]
    decoded = decode_frames(data, key, settings)
    del data
    if isinstance(decoded, Rejection):
        return [_reject(store, base, decoded)]
    facts, frames = decoded
    label = pair_label(candidate.labels.raw_label(facts), facts.modality)
    base = replace(
        base, modality=facts.modality, patient_id=facts.patient, eye=facts.eye, acquired_on=facts.acquired_on
    )
    if isinstance(label, Rejection):
        return [_reject(store, base, label)]
    volume = facts.modality is Modality.OCT or len(frames) > 1
    outcomes = []
    for index, png in enumerate(frames):
        frame = replace(
            base,
            path=f"{candidate.path}#frame={index}" if volume else candidate.path,
            label=label,
            volume_id=facts.instance if volume else None,
            frame_index=index if volume else None,
        )
        checked = validate_image(png, facts.modality, settings)
        if isinstance(checked, Rejection):
            outcomes.append(_reject(store, frame, checked))
            continue
        object_key = curated_key(str(facts.modality), checked)
        store.put_bytes(object_key, png)
        outcomes.append(FileOutcome(frame, facts=checked, object_key=object_key))
    return outcomes


def dicom_images(data: bytes, settings: IngestSettings, key: str = "") -> tuple[DicomFacts, list[bytes]]:
    """For ``retina predict``: the frames of a DICOM file as PNG bytes, or ValueError saying why not."""
    decoded = decode_frames(data, key, settings)
    if isinstance(decoded, Rejection):
        raise ValueError(str(decoded))
    return decoded
