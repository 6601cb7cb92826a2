"""Catalog writes and reads for ingestion and export.

``register_ingest`` is the only writer of images: one transaction per run, rows
inserted with ON CONFLICT DO NOTHING on the content hash, so a re-ingest is a no-op
and two concurrent ingests over overlapping sources register each image exactly once.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.orm import Session

from retina_core.catalog.db import session_scope, upsert
from retina_core.catalog.models import (
    DatasetVersionRow,
    ImageRow,
    IngestRunRow,
    PairRow,
    QuarantineRow,
    utcnow,
)
from retina_core.config import SplitSettings
from retina_core.data.ingest import FileOutcome
from retina_core.data.records import ImageRecord
from retina_core.data.rejections import Reason, Rejection, printable
from retina_core.data.sources import Candidate
from retina_core.data.splits import assign_split, split_balance
from retina_core.domain import Modality, Source, Split
from retina_core.results import IngestSummary, QuarantineEntry


def _catalog_digest(session: Session) -> tuple[str, dict[str, int]]:
    h = hashlib.sha256()
    counts: Counter[str] = Counter()
    rows = session.execute(
        select(ImageRow.sha256, ImageRow.label, ImageRow.split, ImageRow.modality).order_by(ImageRow.sha256)
    )
    for sha, label, split, modality in rows:
        h.update(f"{sha}:{label}:{split}\n".encode())
        counts[modality] += 1
    counts["pairs"] = len(session.execute(select(PairRow.id)).all())
    h.update(f"pairs:{counts['pairs']}".encode())
    return h.hexdigest(), dict(counts)


_BATCH = 1000
"""Quarantine rows per executemany: a manifest of missing files makes one row per entry."""


class _QuarantineWriter:
    """Buffers quarantine rows and inserts them in batches (one statement per thousand rows,
    not one ORM object each), keeping the entries the summary reports."""

    def __init__(self, session: Session, run_id: int, source: str) -> None:
        self.session, self.run_id, self.source = session, run_id, source
        self.pending: list[dict[str, Any]] = []
        self.entries: list[QuarantineEntry] = []

    def add(self, path: str, rejection: Rejection, object_key: str | None, sha256: str | None = None) -> None:
        self.entries.append(
            _record_quarantine(self.pending, self.run_id, self.source, path, rejection, object_key, sha256)
        )
        if len(self.pending) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.session.execute(insert(QuarantineRow), self.pending)
            self.pending = []


def _record_quarantine(
    pending: list[dict[str, Any]],
    run_id: int,
    source: str,
    path: str,
    rejection: Rejection,
    object_key: str | None,
    sha256: str | None = None,
) -> QuarantineEntry:
    """Names and details are stored escaped (:func:`printable`): a file name that is not
    UTF-8, or a NUL from a manifest, is recorded instead of failing the run's transaction."""
    path, detail = printable(path), printable(rejection.detail)
    pending.append(
        {
            "ingest_run_id": run_id,
            "source": source,
            "path": path,
            "reason": rejection.reason.value,
            "detail": detail,
            "sha256": sha256,
            "object_key": object_key,
            "created_at": utcnow(),
        }
    )
    return QuarantineEntry(path=path, reason=f"{rejection.reason.value}: {detail}")


def register_ingest(
    engine: Engine, source: Source, location: str, outcomes: Iterable[FileOutcome], splits: SplitSettings
) -> IngestSummary:
    """Write one run's outcomes in a single transaction (all or nothing).

    ``outcomes`` is read once, in order, so a generator works: only accepted pair rows and
    the hashes seen are kept, not every outcome.
    """
    with session_scope(engine) as session:
        run = IngestRunRow(source=str(source), location=location)
        session.add(run)
        session.flush()
        quarantine = _QuarantineWriter(session, run.id, str(source))
        new_by_modality: Counter[str] = Counter()
        new_shas: list[str] = []
        seen: dict[str, FileOutcome] = {}
        accepted_by_pair: dict[int, dict[str, str]] = {}
        pair_candidates: dict[int, Candidate] = {}
        already_known = duplicates = scanned = 0
        for outcome in outcomes:
            scanned += 1
            c = outcome.candidate
            if c.pair_row is not None and outcome.accepted:
                pair_candidates.setdefault(c.pair_row, c)
            if not outcome.accepted:
                assert outcome.rejection is not None
                quarantine.add(c.path, outcome.rejection, outcome.object_key)
                continue
            facts = outcome.facts
            assert facts is not None and c.patient_id is not None
            if facts.sha256 in seen:
                duplicates += 1
                first = seen[facts.sha256].candidate
                if first.label != c.label or first.modality != c.modality:
                    quarantine.add(
                        c.path,
                        Rejection(Reason.LABEL_CONFLICT, f"same bytes as {first.path} but a different label"),
                        outcome.object_key,
                        facts.sha256,
                    )
                elif c.pair_row is not None:
                    accepted_by_pair.setdefault(c.pair_row, {})[str(c.modality)] = facts.sha256
                continue
            seen[facts.sha256] = outcome
            split = assign_split(c.patient_id, splits)
            inserted = session.execute(
                upsert(session, ImageRow)
                .values(
                    sha256=facts.sha256,
                    modality=str(c.modality),
                    source=str(source),
                    source_path=printable(c.path),
                    patient_id=c.patient_id,
                    eye=c.eye,
                    label=c.label,
                    split=str(split),
                    width=facts.width,
                    height=facts.height,
                    format=facts.format,
                    object_key=outcome.object_key,
                    volume_id=c.volume_id,
                    frame_index=c.frame_index,
                    acquired_on=c.acquired_on,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["sha256"])
                .returning(ImageRow.sha256)
            ).first()
            if inserted is None:
                existing = session.get(ImageRow, facts.sha256)
                if existing is not None and (
                    existing.label != c.label or existing.modality != str(c.modality)
                ):
                    quarantine.add(
                        c.path,
                        Rejection(
                            Reason.LABEL_CONFLICT,
                            f"content already catalogued as {existing.modality} label {existing.label} "
                            f"(from {existing.source_path}); this file says {c.modality} label {c.label}",
                        ),
                        outcome.object_key,
                        facts.sha256,
                    )
                    continue
                already_known += 1
            else:
                new_by_modality[str(c.modality)] += 1
                new_shas.append(facts.sha256)
            if c.pair_row is not None:
                accepted_by_pair.setdefault(c.pair_row, {})[str(c.modality)] = facts.sha256
        quarantine.flush()
        quarantined = quarantine.entries
        new_pairs = _register_pairs(session, pair_candidates, accepted_by_pair, splits)
        version = _maybe_new_version(session, dict(new_by_modality), new_shas, new_pairs)
        summary = IngestSummary(
            source=str(source),
            location=location,
            scanned=scanned,
            accepted=len(new_shas),
            already_known=already_known,
            duplicates=duplicates,
            quarantined=quarantined,
            dataset_version=version,
            new_images=dict(new_by_modality),
            new_pairs=new_pairs,
            split_balance=_balance(session),
        )
        run.counts = summary.model_dump(exclude={"quarantined", "split_balance"}) | {
            "quarantined": len(quarantined)
        }
        run.dataset_version = version
        run.finished_at = utcnow()
        return summary


def _register_pairs(
    session: Session,
    rows: dict[int, Candidate],
    accepted: dict[int, dict[str, str]],
    splits: SplitSettings,
) -> int:
    """Insert each distinct (fundus, OCT) pair once: a manifest may repeat a pair on many rows."""
    distinct: dict[tuple[str, str], int] = {}
    for row, shas in sorted(accepted.items()):
        if set(shas) == {Modality.FUNDUS.value, Modality.OCT.value}:
            distinct.setdefault((shas["fundus"], shas["oct"]), row)
    new = 0
    for row in distinct.values():
        shas = accepted[row]
        c = rows[row]
        assert c.patient_id is not None
        result = session.execute(
            upsert(session, PairRow)
            .values(
                patient_id=c.patient_id,
                eye=c.eye or "",
                fundus_sha256=shas["fundus"],
                oct_sha256=shas["oct"],
                split=str(assign_split(c.patient_id, splits)),
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["fundus_sha256", "oct_sha256"])
            .returning(PairRow.id)
        ).first()
        new += result is not None
    return new


def _maybe_new_version(
    session: Session, new_by_modality: dict[str, int], new_shas: list[str], new_pairs: int
) -> int | None:
    """A dataset version is an identity of content: created only when the content changed."""
    session.flush()
    digest, counts = _catalog_digest(session)
    existing = session.execute(
        select(DatasetVersionRow.id).where(DatasetVersionRow.digest == digest)
    ).scalar()
    if existing is None and (new_shas or new_pairs):
        existing = session.execute(
            upsert(session, DatasetVersionRow)
            .values(
                digest=digest,
                counts=counts,
                new_images=new_by_modality | {"pairs": new_pairs},
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["digest"])
            .returning(DatasetVersionRow.id)
        ).scalar()
    if existing is not None and new_shas:
        session.execute(
            update(ImageRow)
            .where(ImageRow.sha256.in_(new_shas), ImageRow.dataset_version.is_(None))
            .values(dataset_version=existing)
        )
    return existing if existing is not None else latest_dataset_version_in(session)


def latest_dataset_version_in(session: Session) -> int | None:
    return session.execute(
        select(DatasetVersionRow.id).order_by(DatasetVersionRow.id.desc()).limit(1)
    ).scalar()


def latest_dataset_version(engine: Engine) -> int | None:
    with session_scope(engine) as session:
        return latest_dataset_version_in(session)


def _balance(session: Session) -> dict[str, dict[str, dict[int, int]]]:
    out: dict[str, dict[str, dict[int, int]]] = {}
    for modality in Modality:
        rows = session.execute(
            select(ImageRow.split, ImageRow.label).where(ImageRow.modality == modality.value)
        ).all()
        out[modality.value] = split_balance((s, label) for s, label in rows)
    return out


def split_report(engine: Engine) -> dict[str, dict[str, dict[int, int]]]:
    with session_scope(engine) as session:
        return _balance(session)


def export_images(engine: Engine) -> list[dict[str, Any]]:
    """Every image with its identity, label and split (``retina catalog export``)."""
    with session_scope(engine) as session:
        rows = session.execute(select(ImageRow).order_by(ImageRow.modality, ImageRow.sha256)).scalars()
        return [
            {
                "sha256": r.sha256,
                "modality": r.modality,
                "source": r.source,
                "patient_id": r.patient_id,
                "eye": r.eye,
                "label": r.label,
                "split": r.split,
                "source_path": r.source_path,
                "object_key": r.object_key,
                "dataset_version": r.dataset_version,
                "volume_id": r.volume_id,
                "frame_index": r.frame_index,
                "acquired_on": r.acquired_on,
            }
            for r in rows
        ]


def image_records(
    engine: Engine, modality: Modality, *, labeled_only: bool = True, up_to: int | None = None
) -> list[ImageRecord]:
    """The training/evaluation view of the catalog for one modality, in a stable order.

    ``up_to`` keeps the images first held by that dataset version or an earlier one (rows
    from before versions were recorded count as earlier): the catalog as it was then.
    """
    with session_scope(engine) as session:
        query = select(ImageRow).where(ImageRow.modality == modality.value).order_by(ImageRow.sha256)
        if labeled_only:
            query = query.where(ImageRow.label.is_not(None))
        if up_to is not None:
            query = query.where(or_(ImageRow.dataset_version.is_(None), ImageRow.dataset_version <= up_to))
        return [
            ImageRecord(
                sha256=r.sha256,
                modality=Modality(r.modality),
                label=int(r.label) if r.label is not None else -1,
                patient_id=r.patient_id,
                split=Split(r.split),
                object_key=r.object_key,
                volume_id=r.volume_id,
                frame_index=r.frame_index,
            )
            for r in session.execute(query).scalars()
        ]


def pair_rows(engine: Engine) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        return [
            {
                "patient_id": p.patient_id,
                "eye": p.eye,
                "fundus": p.fundus_sha256,
                "oct": p.oct_sha256,
                "split": p.split,
            }
            for p in session.execute(select(PairRow).order_by(PairRow.id)).scalars()
        ]


def quarantine_counts(engine: Engine) -> dict[str, int]:
    """Rejected files by reason, counting each (source, path, reason) once across re-runs."""
    with session_scope(engine) as session:
        rows = session.execute(select(QuarantineRow.source, QuarantineRow.path, QuarantineRow.reason)).all()
    return dict(Counter(reason for _, _, reason in set(rows)))


def image_versions(engine: Engine, modality: Modality) -> list[dict[str, Any]]:
    """One modality's images with the dataset version that brought each and its catalogued size.

    What the drift check splits into "what the champion trained on" and "what landed since".
    """
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                ImageRow.sha256,
                ImageRow.label,
                ImageRow.patient_id,
                ImageRow.split,
                ImageRow.object_key,
                ImageRow.width,
                ImageRow.height,
                ImageRow.dataset_version,
            )
            .where(ImageRow.modality == modality.value)
            .order_by(ImageRow.sha256)
        ).all()
    return [dict(row._mapping) for row in rows]
