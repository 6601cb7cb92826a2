"""Read the layouts of the real data sets into candidates, before any pixel is decoded.

A source yields one :class:`Candidate` per file it knows of, carrying whatever problem
the *layout* already reveals (label missing, class folder disagreeing with the file
name, file listed but absent). Pixel-level checks happen later in ``validation``; both
kinds of problem end up in quarantine with a reason, and nothing here raises for a
bad file. Only an unusable location raises :class:`SourceError`, and so does a manifest
over the configured limits (bytes, rows, field length): refused before it is read whole.
Manifests are parsed row by row as they are scanned, never held as a list of rows.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from retina_core.config import IngestSettings
from retina_core.data.rejections import Reason, Rejection, SourceError, printable
from retina_core.domain import DRGrade, Modality, OctClass, Source
from retina_core.storage import ObjectStore, ObjectTooLarge, StorageError, SymlinkRefused

_DEFAULT_LIMITS = IngestSettings()

_KERMANY_NAME = re.compile(r"^(?P<cls>[A-Za-z]+)-(?P<patient>\d+)-(?P<n>\d+)\.(?:jpe?g|png)$", re.IGNORECASE)
EYES = {"OD": "OD", "RIGHT": "OD", "R": "OD", "OS": "OS", "LEFT": "OS", "L": "OS"}


@dataclass(frozen=True)
class Candidate:
    source: Source
    path: str
    """Key relative to the landing root."""
    modality: Modality
    patient_id: str | None
    label: int | None
    eye: str | None = None
    problem: Rejection | None = None
    pair_row: int | None = None
    """Row of the pairs manifest this file belongs to (pairs source only)."""
    mask_path: str | None = None
    """Where a lesion mask for this image would be (the synthetic layouts write them)."""
    volume_id: str | None = None
    """Keyed hash of the OCT volume a B-scan was decoded from (DICOM source only)."""
    frame_index: int | None = None
    acquired_on: str | None = None
    """Acquisition date, YYYY-MM-DD (DICOM source only)."""


def is_hidden(key: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(key).parts)


def _safe_relpath(path: str) -> bool:
    """String operations, not PurePosixPath: this runs twice per row of a large manifest."""
    p = path.replace("\\", "/")
    return bool(path) and not p.startswith("/") and ".." not in p.split("/") and "\x00" not in path


def _pair_mask_path(path: str, modality: Modality) -> str:
    """``a/f/x.png`` -> ``a/masks/fundus/x.png``: where the synthetic layout puts a mask."""
    stem = posixpath.splitext(posixpath.basename(path))[0]
    return posixpath.join(posixpath.dirname(posixpath.dirname(path)), "masks", modality.value, f"{stem}.png")


def read_manifest(
    landing: ObjectStore, key: str, required: set[str], limits: IngestSettings
) -> Iterator[tuple[int, dict[str, str], Rejection | None]]:
    """``(line, row, problem)`` for each data row, parsed lazily; a row with an over-long
    field comes with a problem instead of its values. Raises SourceError for a manifest
    that is unreadable, too large, not UTF-8, not CSV, or has more rows than allowed."""
    try:
        data = landing.get_bytes(key, max_bytes=limits.max_manifest_bytes)
    except ObjectTooLarge as exc:
        raise SourceError(
            f"{key} is {exc.size} bytes, over the {limits.max_manifest_bytes}-byte manifest limit "
            "(RETINA_INGEST__MAX_MANIFEST_BYTES)"
        ) from None
    except StorageError as exc:
        raise SourceError(f"cannot read {key}: {exc}") from exc
    reader = csv.DictReader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))
    try:
        header = {(h or "").strip() for h in reader.fieldnames or []}
        missing = required - header
        if missing:
            raise SourceError(f"{key} lacks column(s) {sorted(missing)}; found {sorted(header)}")
        for count, row in enumerate(reader, start=1):
            if count > limits.max_manifest_rows:
                raise SourceError(
                    f"{key} has more than {limits.max_manifest_rows} rows (RETINA_INGEST__MAX_MANIFEST_ROWS)"
                )
            values = {k.strip(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}
            longest = max((len(v) for v in values.values()), default=0)
            if longest > limits.max_field_chars:
                problem = Rejection(
                    Reason.BAD_ROW,
                    f"line {reader.line_num}: a field of {longest} characters, over {limits.max_field_chars}",
                )
                yield reader.line_num, dict.fromkeys(values, ""), problem
            else:
                yield reader.line_num, values, None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{key} is not UTF-8 text (after line {reader.line_num})") from exc
    except csv.Error as exc:
        raise SourceError(f"{key} line {reader.line_num}: not readable as CSV ({exc})") from exc


def _absent(landing: ObjectStore, key: str) -> Rejection | None:
    """None when the file is there; otherwise why it can't be read."""
    try:
        return (
            None
            if landing.exists(key)
            else Rejection(Reason.FILE_MISSING, f"{printable(key)} is listed but absent")
        )
    except SymlinkRefused:
        return Rejection(
            Reason.SYMLINK, "a symbolic link (or inside a linked folder); links are never followed"
        )
    except StorageError as exc:
        return Rejection(Reason.PATH_ESCAPE, f"{printable(key)}: {printable(str(exc))}")


def parse_label(raw: str | None, valid: range) -> int | Rejection:
    if raw is None or raw == "":
        return Rejection(Reason.LABEL_MISSING, "no label given")
    try:
        value = float(raw)
    except ValueError:
        return Rejection(Reason.LABEL_NOT_A_NUMBER, f"label {raw!r} is not a number")
    if not value.is_integer() or int(value) not in valid:
        return Rejection(Reason.LABEL_OUT_OF_RANGE, f"label {raw!r} is not one of {list(valid)}")
    return int(value)


def scan_aptos(landing: ObjectStore, limits: IngestSettings = _DEFAULT_LIMITS) -> Iterator[Candidate]:
    """APTOS 2019: ``train.csv`` (id_code, diagnosis) + ``train_images/{id_code}.png``."""
    if not landing.exists("train.csv"):
        raise SourceError("not an APTOS folder: train.csv is missing")
    rows = read_manifest(landing, "train.csv", {"id_code", "diagnosis"}, limits)
    on_disk = {info.key for info in landing.list("train_images/") if not is_hidden(info.key)}
    listed: set[str] = set()
    grades = range(len(DRGrade))
    for line, row, problem in rows:
        if problem is not None:
            yield Candidate(
                Source.APTOS, f"<train.csv line {line}>", Modality.FUNDUS, None, None, problem=problem
            )
            continue
        id_code = row["id_code"]
        key = f"train_images/{id_code}.png"
        base = Candidate(
            Source.APTOS,
            key,
            Modality.FUNDUS,
            patient_id=id_code or None,
            label=None,
            mask_path=f"train_masks/{id_code}.png",
        )
        if not _safe_relpath(id_code) or "/" in id_code:
            yield replace(
                base, problem=Rejection(Reason.PATH_ESCAPE, f"id_code {id_code!r} is not a file name")
            )
            continue
        if key in listed:
            yield replace(base, problem=Rejection(Reason.BAD_ROW, f"id_code {id_code!r} listed twice"))
            continue
        listed.add(key)
        label = parse_label(row["diagnosis"], grades)
        if isinstance(label, Rejection):
            yield replace(base, problem=label)
        elif key not in on_disk and (absent := _absent(landing, key)) is not None:
            yield replace(base, label=label, problem=absent)
        else:
            yield replace(base, label=label)
    for key in sorted(on_disk - listed):
        yield Candidate(
            Source.APTOS,
            key,
            Modality.FUNDUS,
            patient_id=None,
            label=None,
            problem=Rejection(Reason.UNLABELED, "file is not listed in train.csv; never trained on"),
        )


def _kermany_root(landing: ObjectStore) -> str:
    for prefix in ("OCT2017/", ""):
        for split in ("train/", "test/", "val/"):
            if next(iter(landing.list(prefix + split)), None) is not None:
                return prefix
    raise SourceError("not a Kermany folder: expected OCT2017/{train,test}/{CLASS}/ or {train,test}/{CLASS}/")


def scan_kermany(landing: ObjectStore, limits: IngestSettings = _DEFAULT_LIMITS) -> Iterator[Candidate]:
    """Kermany 2018: ``OCT2017/{train,test}/{CLASS}/{CLASS}-{patient}-{n}.jpeg``.

    The train/test folder is ignored for splitting: the catalog assigns patient-level
    splits itself, because the public folders put some patients in both.
    """
    root = _kermany_root(landing)
    for info in landing.list(root):
        key = info.key
        if is_hidden(key):
            continue
        parts = PurePosixPath(key[len(root) :]).parts
        base = Candidate(
            Source.KERMANY,
            key,
            Modality.OCT,
            patient_id=None,
            label=None,
            mask_path=f"masks/{PurePosixPath(key).stem}.png",
        )
        if len(parts) != 3 or parts[0] not in ("train", "test", "val"):
            yield replace(base, problem=Rejection(Reason.UNPARSEABLE_NAME, "not at {split}/{CLASS}/{file}"))
            continue
        folder, name = parts[1], parts[2]
        try:
            folder_class = OctClass.from_folder(folder)
        except KeyError:
            yield replace(
                base, problem=Rejection(Reason.UNKNOWN_CLASS, f"folder {folder!r} is not a Kermany class")
            )
            continue
        match = _KERMANY_NAME.match(name)
        if match is None:
            yield replace(
                base,
                label=int(folder_class),
                problem=Rejection(Reason.UNPARSEABLE_NAME, f"{name!r} is not CLASS-PATIENT-N.jpeg"),
            )
            continue
        patient = match["patient"]
        if match["cls"].upper() != folder_class.name:
            yield replace(
                base,
                patient_id=patient,
                problem=Rejection(
                    Reason.CLASS_MISMATCH, f"file name says {match['cls'].upper()} but folder says {folder}"
                ),
            )
            continue
        yield replace(base, patient_id=patient, label=int(folder_class))


def pair_label(raw: str | None, modality: Modality) -> int | Rejection | None:
    if raw is None or raw == "":
        return None
    if modality is Modality.OCT and not raw.lstrip("-").isdigit():
        try:
            return int(OctClass.from_folder(raw))
        except KeyError:
            return Rejection(Reason.LABEL_OUT_OF_RANGE, f"oct_class {raw!r} is not a Kermany class")
    valid = range(len(DRGrade)) if modality is Modality.FUNDUS else range(len(OctClass))
    return parse_label(raw, valid)


def scan_pairs(
    landing: ObjectStore, manifest: str = "pairs.csv", limits: IngestSettings = _DEFAULT_LIMITS
) -> Iterator[Candidate]:
    """A pairs manifest: ``patient_id,eye,fundus_path,oct_path[,dr_grade][,oct_class]``."""
    if not landing.exists(manifest):
        raise SourceError(f"pairs manifest {manifest} is missing")
    rows = read_manifest(landing, manifest, {"patient_id", "eye", "fundus_path", "oct_path"}, limits)
    for i, (_line, row, problem) in enumerate(rows):
        if problem is not None:
            for modality in Modality:
                yield Candidate(Source.PAIRS, f"<row {i + 2}>", modality, None, None, problem=problem)
            continue
        patient, eye = row["patient_id"], EYES.get(row["eye"].upper())
        for modality, path_col, label_col in (
            (Modality.FUNDUS, "fundus_path", "dr_grade"),
            (Modality.OCT, "oct_path", "oct_class"),
        ):
            path = row[path_col].replace("\\", "/")
            label = pair_label(row.get(label_col), modality)
            problem: Rejection | None = None
            kept_label: int | None = None
            if not patient:
                problem = Rejection(Reason.BAD_ROW, f"row {i + 2}: patient_id is empty")
            elif eye is None:
                problem = Rejection(Reason.BAD_ROW, f"row {i + 2}: eye {row['eye']!r} not OD/OS")
            elif not _safe_relpath(path):
                problem = Rejection(Reason.PATH_ESCAPE, f"{path!r} leaves the manifest folder")
            elif isinstance(label, Rejection):
                problem = label
            else:
                problem, kept_label = _absent(landing, path), label
            yield Candidate(
                Source.PAIRS,
                path or f"<row {i + 2}>",
                modality,
                patient or None,
                kept_label,
                eye,
                problem,
                i,
                mask_path=_pair_mask_path(path, modality),
            )


SCANNERS = {Source.APTOS: scan_aptos, Source.KERMANY: scan_kermany, Source.PAIRS: scan_pairs}
