"""The champions the service answers with, reloaded when the registry's choice changes.

Every request asks the registry (one small query) which versions a predictor would load
now; when that differs from what is loaded, a new :class:`Predictor` is built and swapped
in, so a promotion takes effect without a restart and each answer names the version that
gave it. A load that fails keeps the reason for ``/readyz`` rather than serving errors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from retina_core.catalog.registry import ModelVersion, preferred_versions
from retina_core.config import Settings
from retina_core.predict import MULTITASK_NAME, NAMES, Predictor
from retina_core.serving.cards import ServedModel, describe
from retina_core.storage import ObjectStore

log = logging.getLogger(__name__)

MODEL_NAMES = (*NAMES.values(), "fusion_head", MULTITASK_NAME)
RETRY_SECONDS = 5.0
"""A failed load is retried at most this often while the registry's choice stays the same:
loading reads every weight file, and a broken one would otherwise be re-read per request."""
PredictorFactory = Callable[[Settings, Engine, ObjectStore], Predictor]


@dataclass(frozen=True)
class Loaded:
    """One consistent snapshot: a request uses the predictor and cards it started with."""

    key: dict[str, int | None]
    predictor: Predictor | None = None
    served: dict[str, ServedModel] = field(default_factory=dict)
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.predictor is not None and self.error is None


def _reason(exc: Exception) -> str:
    """Why loading failed, fit for /readyz: a database error's text could hold its URL, so only its kind."""
    if isinstance(exc, SQLAlchemyError):
        return f"catalog unavailable ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"[:300]


class ServingModels:
    """Holds the current :class:`Loaded` snapshot and replaces it when the registry moves on."""

    def __init__(
        self, settings: Settings, engine: Engine, store: ObjectStore, factory: PredictorFactory = Predictor
    ) -> None:
        self.settings, self.engine, self.store, self.factory = settings, engine, store, factory
        self._state = Loaded(key={}, error="not loaded yet")
        self._reload = threading.Lock()
        self._tried = -float("inf")

    def current(self) -> Loaded:
        """The snapshot to answer with, reloaded first when the registry's choice changed."""
        try:
            key = preferred_versions(self.engine, MODEL_NAMES)
        except SQLAlchemyError as exc:
            log.error("cannot read the registry: %s", type(exc).__name__)
            return Loaded(key=self._state.key, error=_reason(exc))
        if self._stale(key):
            with self._reload:
                if self._stale(key):
                    self._tried = time.monotonic()
                    self._state = self._load(key)
        return self._state

    def _stale(self, key: dict[str, int | None]) -> bool:
        if key != self._state.key:
            return True
        return self._state.error is not None and time.monotonic() - self._tried >= RETRY_SECONDS

    def _load(self, key: dict[str, int | None]) -> Loaded:
        if all(v is None for v in key.values()):
            return Loaded(key=key, error="no model is registered yet: run `retina pipeline` or `retina demo`")
        try:
            predictor = self.factory(self.settings, self.engine, self.store)
        except Exception as exc:  # any failure to load is reported by /readyz, never raised per request
            log.error("loading the models failed: %s", _reason(exc))
            return Loaded(key=key, error=_reason(exc))
        versions: list[ModelVersion] = [m.version for m in predictor.models.values()]
        if predictor.fusion_version is not None:
            versions.append(predictor.fusion_version)
        if predictor.multitask is not None:
            versions.append(predictor.multitask[0])
        served = {v.name: describe(self.store, v) for v in versions}
        log.info("serving %s", ", ".join(f"{v.name} v{v.version}" for v in versions))
        return Loaded(key=key, predictor=predictor, served=served)
