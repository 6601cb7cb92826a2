"""The model registry: immutable versions, a champion per model name, and its history.

A version's files are written under ``models/{name}/{version}/`` inside the same
database transaction that inserts its row: the unique (name, version) row serialises
concurrent registrations, and if anything fails the row is rolled back, so no row ever
points at missing files. Registering the same inputs twice (same ``run_key``) returns
the existing version instead of a duplicate. Promotion is one transaction that also
appends an event; nothing is ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from retina_core.catalog.db import session_scope
from retina_core.catalog.models import ModelVersionRow, RegistryEventRow, utcnow
from retina_core.storage import ObjectStore

log = logging.getLogger(__name__)

CHAMPION, CANDIDATE, ARCHIVED = "champion", "candidate", "archived"


class ModelVersion(BaseModel):
    name: str
    version: int
    run_key: str
    status: str
    object_prefix: str
    weights_sha256: str
    primary_metric: str
    primary_value: float | None
    primary_low: float | None
    primary_high: float | None
    data_version: int | None
    parents: dict[str, Any]
    summary: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, row: ModelVersionRow) -> ModelVersion:
        return cls.model_validate(row, from_attributes=True)


class Decision(BaseModel):
    """Why a candidate did or did not become champion; goes into the report verbatim."""

    name: str
    version: int
    promoted: bool
    metric: str
    candidate_value: float | None
    candidate_ci: tuple[float | None, float | None]
    champion_version: int | None
    champion_value: float | None
    champion_ci: tuple[float | None, float | None] | None
    margin: float
    reason: str


def run_key(payload: Mapping[str, Any]) -> str:
    """Identity of a training run's inputs (config, data version, parent versions)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def find_by_run_key(engine: Engine, name: str, key: str) -> ModelVersion | None:
    with session_scope(engine) as session:
        row = session.execute(
            select(ModelVersionRow).where(ModelVersionRow.name == name, ModelVersionRow.run_key == key)
        ).scalar()
        return ModelVersion.of(row) if row else None


def register_version(
    engine: Engine,
    store: ObjectStore,
    *,
    name: str,
    key: str,
    files: Mapping[str, bytes],
    primary_metric: str,
    primary: tuple[float | None, float | None, float | None],
    data_version: int | None,
    parents: Mapping[str, Any] | None = None,
    summary: Mapping[str, Any] | None = None,
    actor: str = "pipeline",
) -> ModelVersion:
    """Store ``files`` (must include ``weights.safetensors``) and insert the version row."""
    if "weights.safetensors" not in files:
        raise ValueError("a model version needs weights.safetensors")
    existing = find_by_run_key(engine, name, key)
    if existing is not None:
        return existing
    with session_scope(engine) as session:
        version = (
            session.execute(
                select(func.max(ModelVersionRow.version)).where(ModelVersionRow.name == name)
            ).scalar()
            or 0
        ) + 1
        prefix = f"models/{name}/{version}"
        row = ModelVersionRow(
            name=name,
            version=version,
            run_key=key,
            status=CANDIDATE,
            object_prefix=prefix,
            weights_sha256=hashlib.sha256(files["weights.safetensors"]).hexdigest(),
            primary_metric=primary_metric,
            primary_value=primary[0],
            primary_low=primary[1],
            primary_high=primary[2],
            data_version=data_version,
            parents=dict(parents or {}),
            summary=dict(summary or {}),
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()  # takes the unique (name, version) slot before any file is written
        for filename, data in files.items():
            # No committed row references this prefix yet, so leftovers of a crashed attempt
            # may be replaced; once the row commits, the files are never touched again.
            store.put_bytes(f"{prefix}/{filename}", data, overwrite=True)
        _event(session, name, version, "register", actor, "new version registered")
        return ModelVersion.of(row)


def _event(
    session: Session,
    name: str,
    version: int,
    action: str,
    actor: str,
    reason: str,
    details: Mapping[str, Any] | None = None,
) -> None:
    session.add(
        RegistryEventRow(
            name=name,
            version=version,
            action=action,
            actor=actor,
            reason=reason,
            details=dict(details or {}),
            created_at=utcnow(),
        )
    )


def decided(engine: Engine, name: str, version: int) -> bool:
    """Whether the champion rule (or a manual promotion) was ever applied to this version.

    Registration and the decision are two transactions; a run killed between them leaves a
    registered version nobody decided on, which the next run with the same inputs finishes.
    """
    with session_scope(engine) as session:
        return (
            session.execute(
                select(RegistryEventRow.id).where(
                    RegistryEventRow.name == name,
                    RegistryEventRow.version == version,
                    RegistryEventRow.action.in_(["promote", "keep"]),
                )
            ).first()
            is not None
        )


def latest_decision(engine: Engine, name: str, version: int) -> Decision | None:
    """The champion rule's last decision on this version (None: never decided, or a manual promotion)."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(RegistryEventRow)
            .where(
                RegistryEventRow.name == name,
                RegistryEventRow.version == version,
                RegistryEventRow.action.in_(["promote", "keep"]),
            )
            .order_by(RegistryEventRow.id.desc())
        ).scalars()
        for row in rows:
            try:
                return Decision.model_validate(row.details)
            except ValueError:  # a manual promotion records no decision
                continue
    return None


def champion(engine: Engine, name: str) -> ModelVersion | None:
    with session_scope(engine) as session:
        row = _champion_row(session, name)
        return ModelVersion.of(row) if row else None


def _champion_row(session: Session, name: str) -> ModelVersionRow | None:
    return session.execute(
        select(ModelVersionRow).where(ModelVersionRow.name == name, ModelVersionRow.status == CHAMPION)
    ).scalar()


def decision_pending(engine: Engine, name: str, version: int) -> bool:
    """True, with a warning, when a reused version still awaits the champion rule (see :func:`decided`)."""
    if decided(engine, name, version):
        return False
    log.warning(
        "%s v%d: registered by a run that ended before the champion rule; applying it now", name, version
    )
    return True


def get_version(engine: Engine, name: str, version: int) -> ModelVersion:
    with session_scope(engine) as session:
        row = session.execute(
            select(ModelVersionRow).where(ModelVersionRow.name == name, ModelVersionRow.version == version)
        ).scalar()
        if row is None:
            raise KeyError(f"no model {name} version {version}")
        return ModelVersion.of(row)


def list_versions(engine: Engine, name: str | None = None) -> list[ModelVersion]:
    with session_scope(engine) as session:
        query = select(ModelVersionRow).order_by(ModelVersionRow.name, ModelVersionRow.version)
        if name is not None:
            query = query.where(ModelVersionRow.name == name)
        return [ModelVersion.of(r) for r in session.execute(query).scalars()]


def history(engine: Engine, name: str) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(RegistryEventRow).where(RegistryEventRow.name == name).order_by(RegistryEventRow.id)
        ).scalars()
        return [
            {
                "version": r.version,
                "action": r.action,
                "actor": r.actor,
                "reason": r.reason,
                "details": r.details,
                "at": r.created_at.isoformat(),
            }
            for r in rows
        ]


def decide(
    candidate: ModelVersion,
    champion_version: ModelVersion | None,
    *,
    margin: float,
    candidate_value: float | None = None,
    champion_value: float | None = None,
    champion_ci: tuple[float | None, float | None] | None = None,
) -> Decision:
    """Champion/challenger rule: promote only when the candidate beats the champion by > margin.

    Values default to each version's stored primary metric; the pipeline passes both
    models' values re-measured on today's fixed test split so the comparison is fair.
    """
    cand = candidate.primary_value if candidate_value is None else candidate_value
    base = dict(
        name=candidate.name,
        version=candidate.version,
        metric=candidate.primary_metric,
        candidate_value=cand,
        candidate_ci=(candidate.primary_low, candidate.primary_high),
        margin=margin,
    )
    if champion_version is None:
        return Decision(
            **base,
            promoted=cand is not None,
            champion_version=None,
            champion_value=None,
            champion_ci=None,
            reason="no champion yet: the first valid version becomes champion",
        )
    champ = champion_version.primary_value if champion_value is None else champion_value
    ci = champion_ci or (champion_version.primary_low, champion_version.primary_high)
    if cand is None or champ is None:
        promoted, reason = False, "primary metric undefined; kept as candidate"
    elif cand > champ + margin:
        promoted, reason = (
            True,
            f"{cand:.4f} beats champion v{champion_version.version} {champ:.4f} by more than {margin}",
        )
    else:
        promoted, reason = (
            False,
            (
                f"{cand:.4f} does not beat champion v{champion_version.version} {champ:.4f} by more than {margin}"
            ),
        )
    return Decision(
        **base,
        promoted=promoted,
        champion_version=champion_version.version,
        champion_value=champ,
        champion_ci=ci,
        reason=reason,
    )


def _lock_model(session: Session, name: str) -> None:
    """Take the write lock on ``name``'s versions before reading its champion.

    Two promotions that both read "the champion is v1" and then both write would leave two
    champions (reproduced on PostgreSQL and SQLite with two threads). A no-op UPDATE of the
    name's rows as the transaction's first statement serialises them: PostgreSQL row locks
    make the second wait, SQLite's write lock does the same (its BEGIN comes with the first
    write), and the second then reads the champion the first committed.
    """
    session.execute(
        update(ModelVersionRow).where(ModelVersionRow.name == name).values(status=ModelVersionRow.status)
    )


def apply_decision(engine: Engine, decision: Decision, actor: str = "pipeline") -> None:
    """Record the decision and, when promoted, swap the champion in one transaction."""
    with session_scope(engine) as session:
        _lock_model(session, decision.name)
        if decision.promoted:
            _set_champion(session, decision.name, decision.version)
        _event(
            session,
            decision.name,
            decision.version,
            "promote" if decision.promoted else "keep",
            actor,
            decision.reason,
            decision.model_dump(),
        )


def _set_champion(session: Session, name: str, version: int) -> None:
    current = _champion_row(session, name)
    if current is not None:
        current.status = ARCHIVED
    target = session.execute(
        select(ModelVersionRow).where(ModelVersionRow.name == name, ModelVersionRow.version == version)
    ).scalar()
    if target is None:
        raise KeyError(f"no model {name} version {version}")
    target.status = CHAMPION


def promote(engine: Engine, name: str, version: int, *, actor: str, reason: str) -> None:
    """Manual override: make ``version`` champion; who and why are recorded."""
    with session_scope(engine) as session:
        _lock_model(session, name)
        _set_champion(session, name, version)
        _event(session, name, version, "promote", actor, f"manual: {reason}")


def rollback(engine: Engine, name: str, *, actor: str, reason: str) -> int:
    """Return to the champion before the current one; returns the restored version."""
    with session_scope(engine) as session:
        _lock_model(session, name)
        current = _champion_row(session, name)
        promotions = (
            session.execute(
                select(RegistryEventRow.version)
                .where(RegistryEventRow.name == name, RegistryEventRow.action.in_(["promote", "rollback"]))
                .order_by(RegistryEventRow.id)
            )
            .scalars()
            .all()
        )
        previous = [v for v in promotions if current is None or v != current.version]
        if not previous:
            raise ValueError(f"{name} has no earlier champion to roll back to")
        target = previous[-1]
        _set_champion(session, name, target)
        _event(
            session,
            name,
            target,
            "rollback",
            actor,
            f"manual: {reason}",
            {"from": current.version if current else None},
        )
        return target


def preferred_versions(engine: Engine, names: tuple[str, ...]) -> dict[str, int | None]:
    """Per name, the champion's version, else the newest: what a predictor loads.

    One small query, cheap enough to run on every request of the prediction service so it
    notices a promotion without a restart.
    """
    with session_scope(engine) as session:
        rows = session.execute(
            select(ModelVersionRow.name, ModelVersionRow.status, func.max(ModelVersionRow.version))
            .where(ModelVersionRow.name.in_(names))
            .group_by(ModelVersionRow.name, ModelVersionRow.status)
        ).all()
    found: dict[str, int | None] = dict.fromkeys(names)
    newest: dict[str, int] = {}
    for name, status, version in rows:
        if status == CHAMPION:
            found[name] = int(version)
        newest[name] = max(newest.get(name, 0), int(version))
    return {name: found[name] if found[name] is not None else newest.get(name) for name in names}
