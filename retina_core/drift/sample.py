"""Which images a drift check compares, and their feature matrices (the reference's cached).

The reference is the train split of the dataset version the champion was trained on; the
new images are those that landed after it. The reference's features are the same on every
check until the champion changes, so they are stored once under a key derived from the
image ids and the feature code (``drift/reference/{modality}/{key}.npz``): a check then
decodes only the new images.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from retina_core.domain import Modality, Split
from retina_core.drift.features import FEATURES, FEATURES_VERSION, image_features
from retina_core.storage import ObjectStore
from retina_core.storage.base import ObjectExistsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Images:
    """Rows of the catalog (see ``image_versions``) as parallel arrays."""

    shas: list[str]
    keys: list[str]
    labels: list[int | None]
    patients: list[str]
    sizes: list[tuple[int, int]]

    @classmethod
    def of(cls, rows: Sequence[dict[str, Any]]) -> Images:
        return cls(
            shas=[r["sha256"] for r in rows],
            keys=[r["object_key"] for r in rows],
            labels=[r["label"] for r in rows],
            patients=[r["patient_id"] for r in rows],
            sizes=[(r["width"], r["height"]) for r in rows],
        )

    def __len__(self) -> int:
        return len(self.shas)

    def labelled(self) -> list[int]:
        return [i for i, label in enumerate(self.labels) if label is not None]


def split_reference(
    rows: Sequence[dict[str, Any]], reference_version: int | None, upto: int | None = None
) -> tuple[Images, Images]:
    """(reference, new): the champion's train split at its version, and everything that landed since.

    ``upto`` bounds the new images to one dataset version (the one an event announced).
    """

    def old(version: int | None) -> bool:
        return version is None or reference_version is None or version <= reference_version

    reference = [r for r in rows if old(r["dataset_version"]) and r["split"] == Split.TRAIN.value]
    new = [
        r for r in rows if not old(r["dataset_version"]) and (upto is None or r["dataset_version"] <= upto)
    ]
    return Images.of(reference), Images.of(new)


def compute_features(store: ObjectStore, images: Images, *, threads: int = 4) -> np.ndarray:
    """(n, len(FEATURES)) features; threads overlap reading with decoding (both release the GIL)."""
    if not len(images):
        return np.zeros((0, len(FEATURES)))

    def one(i: int) -> np.ndarray:
        width, height = images.sizes[i]
        return image_features(store.get_bytes(images.keys[i]), width, height)

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return np.vstack(list(pool.map(one, range(len(images)))))


def reference_features(store: ObjectStore, modality: Modality, images: Images) -> np.ndarray:
    """The reference's features, read from the store when this exact reference was measured before."""
    digest = hashlib.sha256("\n".join([FEATURES_VERSION, *sorted(images.shas)]).encode()).hexdigest()[:32]
    key = f"drift/reference/{Modality(modality).value}/{digest}.npz"
    if store.exists(key):
        with np.load(io.BytesIO(store.get_bytes(key)), allow_pickle=False) as data:
            shas, features = list(data["shas"]), data["features"]
        order = {sha: i for i, sha in enumerate(shas)}
        return features[[order[s] for s in images.shas]]
    features = compute_features(store, images)
    buffer = io.BytesIO()
    np.savez(buffer, shas=np.array(images.shas), features=features)
    with contextlib.suppress(ObjectExistsError):  # a concurrent check stored the same reference first
        store.put_bytes(key, buffer.getvalue())
    log.info("%s: measured and stored the reference's features (%d images)", modality, len(images))
    return features


def sample(n: int, size: int, seed: int) -> np.ndarray:
    """At most ``size`` sorted indices of ``range(n)``, seeded: the same reference on every check."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
