"""Per-file ingestion: read once, validate, hash, and put the bytes where they belong.

Accepted bytes go to ``images/{modality}/{sha256}.{ext}`` (immutable, content
addressed, so re-ingesting writes nothing new); rejected bytes go to ``quarantine/``
beside a ``reason.json``. This module only touches the object store; the catalog rows
are written afterwards in one transaction (``catalog.repository.register_ingest``), so
a crash here leaves at worst unreferenced but valid objects, never a dangling row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass

from retina_core.config import IngestSettings
from retina_core.data.rejections import Reason, Rejection, printable
from retina_core.data.sources import Candidate
from retina_core.data.validation import ImageFacts, validate_image
from retina_core.domain import MAX_PATIENT_ID, Modality
from retina_core.storage import (
    ObjectNotFoundError,
    ObjectStore,
    ObjectTooLarge,
    StorageError,
    StorageUnavailable,
    SymlinkRefused,
    UnsafeKeyError,
)

log = logging.getLogger(__name__)
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_UNREACHABLE = {Reason.FILE_MISSING, Reason.PATH_ESCAPE, Reason.SYMLINK}
"""Problems for which there are no bytes to keep: the catalog's quarantine row is their only
record (a ``reason.json`` beside nothing would cost a durable write per missing file, the
bulk of a large manifest's bookkeeping). For all others the file is quarantined too."""


@dataclass(frozen=True)
class FileOutcome:
    candidate: Candidate
    facts: ImageFacts | None = None
    rejection: Rejection | None = None
    object_key: str | None = None
    """Curated key when accepted; quarantine key (of the file or its reason) when rejected."""

    @property
    def accepted(self) -> bool:
        return self.facts is not None


def needs_bytes(candidate: Candidate) -> bool:
    """Whether processing reads the file (False for a file already known to be missing,
    outside the landing or a link: those are decided without I/O)."""
    return candidate.problem is None or candidate.problem.reason not in _UNREACHABLE


def curated_key(modality: str, facts: ImageFacts) -> str:
    return f"images/{modality}/{facts.sha256}.{facts.format}"


def read_landing_file(landing: ObjectStore, key: str, limit: int) -> bytes | Rejection:
    """The file's bytes, or why not; the size limit is checked on the open file, before reading."""
    try:
        return landing.get_bytes(key, max_bytes=limit)
    except ObjectTooLarge as exc:
        return Rejection(Reason.TOO_LARGE, f"{exc.size} bytes exceeds the {limit} limit")
    except SymlinkRefused:
        return Rejection(
            Reason.SYMLINK, "a symbolic link (or inside a linked folder); links are never followed"
        )
    except UnsafeKeyError as exc:
        return Rejection(Reason.PATH_ESCAPE, printable(str(exc)))
    except ObjectNotFoundError:
        return Rejection(Reason.FILE_MISSING, f"{printable(key)} disappeared before it could be read")
    except StorageUnavailable:
        raise  # the landing is unreachable, not the file bad: retry the step, never quarantine
    except (StorageError, OSError) as exc:
        return Rejection(Reason.UNREADABLE, f"cannot read {printable(key)}: {type(exc).__name__}")


def identity_problem(candidate: Candidate) -> Rejection | None:
    """What no database could store as given: a name that is not text, an over-long or
    control-character patient id. Checked here, for every source and database alike, so
    SQLite and PostgreSQL give the same verdict instead of one of them aborting the run."""
    if printable(candidate.path) != candidate.path:
        return Rejection(
            Reason.BAD_NAME, "the name is not UTF-8 text or holds control characters (recorded escaped)"
        )
    patient = candidate.patient_id
    if patient is not None and len(patient) > MAX_PATIENT_ID:
        return Rejection(Reason.BAD_ROW, f"patient id is {len(patient)} characters, over {MAX_PATIENT_ID}")
    if patient is not None and printable(patient) != patient:
        return Rejection(Reason.BAD_ROW, f"patient id {printable(patient)!r} holds control characters")
    return None


def quarantine(store: ObjectStore, candidate: Candidate, rejection: Rejection, data: bytes | None) -> str:
    """Keep the rejected file (when we have its bytes) and say why, never overwriting."""
    reason = {
        "source": str(candidate.source),
        "path": printable(candidate.path),
        "reason": rejection.reason.value,
        "detail": printable(rejection.detail),
        "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
    }
    payload = json.dumps(reason, indent=2, sort_keys=True).encode()
    tag = hashlib.sha256(payload + (data or b"")).hexdigest()[:16]
    name = _UNSAFE_CHARS.sub("_", printable(candidate.path).replace("/", "__"))[-120:] or "unnamed"
    prefix = f"quarantine/{candidate.source}/{tag}"
    if data is not None:
        store.put_bytes(f"{prefix}/{name}", data)
    store.put_bytes(f"{prefix}/reason.json", payload)
    return f"{prefix}/reason.json"


def process_candidate(
    candidate: Candidate, landing: ObjectStore, store: ObjectStore, settings: IngestSettings
) -> FileOutcome:
    """Never raises for a bad file: every failure becomes a quarantined outcome.

    An unreachable store is not a bad file: :class:`StorageUnavailable` propagates so that
    the caller retries, instead of quarantining good images for a network outage.
    """
    data: bytes | None = None
    rejection = identity_problem(candidate) or candidate.problem  # the more basic flaw first
    facts: ImageFacts | None = None
    if rejection is None or rejection.reason not in _UNREACHABLE:
        read = read_landing_file(landing, candidate.path, settings.max_bytes(candidate.modality))
        if isinstance(read, Rejection):
            # A link is named for what it is, whatever else its name or row got wrong.
            rejection = read if read.reason is Reason.SYMLINK else (rejection or read)
        else:
            data = read
            if rejection is None:
                checked = validate_image(data, candidate.modality, settings)
                if isinstance(checked, Rejection):
                    rejection = checked
                else:
                    facts = checked
    if rejection is not None:
        key = None if rejection.reason in _UNREACHABLE else quarantine(store, candidate, rejection, data)
        log.info("quarantined %s: %s", printable(candidate.path), printable(str(rejection)))
        return FileOutcome(candidate, rejection=rejection, object_key=key)
    assert facts is not None and data is not None
    key = curated_key(str(candidate.modality), facts)
    store.put_bytes(key, data)
    _keep_mask(candidate, facts, landing, store, settings)
    return FileOutcome(candidate, facts=facts, object_key=key)


def mask_key(sha256: str) -> str:
    return f"masks/{sha256}.png"


def _keep_mask(
    candidate: Candidate,
    facts: ImageFacts,
    landing: ObjectStore,
    store: ObjectStore,
    settings: IngestSettings,
) -> None:
    """Copy a lesion mask found beside the image (synthetic data has them; real data rarely does).

    A mask that is unreadable or of another size is ignored with a warning: it is
    evaluation material, never a reason to reject the image itself.
    """
    if candidate.mask_path is None:
        return
    try:
        if not landing.exists(candidate.mask_path):
            return
        data = landing.get_bytes(candidate.mask_path, max_bytes=settings.max_bytes(candidate.modality))
    except StorageError:  # absent, a link, too large or unreadable: the image stands without it
        return
    checked = validate_image(data, Modality.OCT, settings)
    if isinstance(checked, Rejection) or (checked.width, checked.height) != (facts.width, facts.height):
        log.warning("ignoring mask %s: unreadable or not the image's size", candidate.mask_path)
        return
    store.put_bytes(mask_key(facts.sha256), data)
