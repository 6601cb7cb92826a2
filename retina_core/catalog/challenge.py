"""Register or reuse a trained version, then challenge the champion: written once for every model.

Training and fusion differ only in how a model is fitted and how an older champion can be
scored on today's test data, so both are passed in: ``fit`` builds the files and figures
of a new version (called only when no version with the same run key exists), ``remeasure``
scores the current champion beside the candidate. Everything else is the same rule:

* the same inputs (run key) reuse the registered version; a version registered by a run
  that died before the champion rule gets the rule now;
* otherwise the new version is registered (files first, then its row);
* the champion is re-measured on today's test split when that is possible, so the
  comparison is fair; when it is not (other inputs, unreadable files) its registered
  figure is compared and the reason says so. A champion that cannot be read never blocks
  registering the candidate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine

from retina_core.catalog.registry import (
    Decision,
    ModelVersion,
    apply_decision,
    champion,
    decide,
    decision_pending,
    find_by_run_key,
    get_version,
    register_version,
)
from retina_core.storage import ObjectStore

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Remeasured:
    """The champion's figure on today's test data, or why there is none (``value`` None)."""

    value: float | None = None
    ci: tuple[float, float] | None = None
    note: str = ""


Remeasure = Callable[[ModelVersion], Remeasured]


@dataclass
class NewVersion(Generic[T]):
    """What ``fit`` produced: the files and figures to register, and anything the caller keeps."""

    files: Mapping[str, bytes]
    primary_metric: str
    primary: tuple[float | None, float | None, float | None]
    data_version: int | None
    payload: T
    parents: Mapping[str, Any] | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Registered(Generic[T]):
    """The version a run ends with: reused (``payload`` None) or new, and the rule's decision."""

    version: ModelVersion
    reused: bool
    decision: Decision | None
    payload: T | None = None

    @property
    def status(self) -> str:
        return "champion" if self.decision is not None and self.decision.promoted else self.version.status


def register_or_reuse(
    engine: Engine,
    store: ObjectStore,
    *,
    name: str,
    key: str,
    margin: float,
    fit: Callable[[], NewVersion[T]],
    remeasure: Remeasure,
    unreadable_note: str,
    registered: Callable[[], None] | None = None,
) -> Registered[T]:
    """The version for run key ``key``: the registered one, else ``fit()`` registered; then the rule.

    ``registered`` runs once the version row exists (reused or new) and before the rule:
    the place to drop what only a restart needed (epoch checkpoints).
    """
    existing = find_by_run_key(engine, name, key)
    if existing is not None:
        log.info("%s: inputs unchanged since version %d; reusing it", name, existing.version)
        if registered is not None:
            registered()
        if not decision_pending(engine, name, existing.version):
            return Registered(existing, reused=True, decision=None)
        decision = challenge_champion(engine, existing, margin, remeasure, unreadable_note)
        return Registered(get_version(engine, name, existing.version), reused=True, decision=decision)
    new = fit()
    version = register_version(
        engine,
        store,
        name=name,
        key=key,
        files=new.files,
        primary_metric=new.primary_metric,
        primary=new.primary,
        data_version=new.data_version,
        parents=new.parents,
        summary=new.summary,
    )
    if registered is not None:
        registered()
    decision = challenge_champion(engine, version, margin, remeasure, unreadable_note)
    return Registered(version, reused=False, decision=decision, payload=new.payload)


def challenge_champion(
    engine: Engine, candidate: ModelVersion, margin: float, remeasure: Remeasure, unreadable_note: str
) -> Decision:
    """Apply the champion/challenger rule, re-measuring the champion through ``remeasure``."""
    current = champion(engine, candidate.name)
    measured = Remeasured()
    if current is not None and current.version != candidate.version:
        try:
            measured = remeasure(current)
        except Exception:  # an unreadable champion must not block registering the candidate
            log.exception("could not re-measure champion %s v%d", current.name, current.version)
            measured = Remeasured(note=unreadable_note)
    decision = decide(
        candidate, current, margin=margin, champion_value=measured.value, champion_ci=measured.ci
    )
    if measured.note:
        decision = decision.model_copy(update={"reason": f"{decision.reason} ({measured.note})"})
    apply_decision(engine, decision)
    return decision
