"""Training checkpoints in the object store, safe to load.

A checkpoint is a plain dict of tensors, numbers, strings and lists written with
``torch.save`` and read back with ``weights_only=True``: a file carrying any other
pickled object is refused instead of executed. One object per epoch
(``checkpoints/{run_key}/epoch-NNN.pt``); nothing is overwritten, and the newest
complete epoch is found by listing, so a kill during a write leaves the previous
checkpoint usable (the store's writes are atomic).

Each checkpoint carries the whole state (the best weights so far included), so once an
epoch's object is written the older ones of that run are deleted: a run keeps one
checkpoint on disk instead of one per epoch (the full demo left 2.7 GB of optimiser
state behind before), and none once its model version is registered.
"""

from __future__ import annotations

import io
import logging
import pickle
import random
import re
from typing import Any

import numpy as np
import torch

from retina_core.storage import ObjectNotFoundError, ObjectStore, StorageError

log = logging.getLogger(__name__)

_EPOCH = re.compile(r"epoch-(\d{3,})\.pt$")


class UnsafeCheckpointError(ValueError):
    """The checkpoint holds something other than tensors and plain data."""


def checkpoint_prefix(run_key: str) -> str:
    return f"checkpoints/{run_key}"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_bytes(payload: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def from_bytes(data: bytes) -> dict[str, Any]:
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            "checkpoint refused: it contains pickled objects beyond tensors and plain data "
            f"({str(exc).splitlines()[0]})"
        ) from exc
    if not isinstance(payload, dict):
        raise UnsafeCheckpointError(f"checkpoint must be a dict, got {type(payload).__name__}")
    return payload


def save_checkpoint(store: ObjectStore, run_key: str, epoch: int, payload: dict[str, Any]) -> str:
    """Write this epoch's checkpoint, then delete the run's older ones (never before: a kill
    between the two leaves two whole checkpoints, not zero)."""
    key = f"{checkpoint_prefix(run_key)}/epoch-{epoch:03d}.pt"
    # Two trainings with the same run key (a retried deployment beside a stray one) write
    # the same epoch with bytes that may differ (timing, nondeterministic kernels): both
    # are whole states of the same inputs, so the later one replaces the earlier (an atomic
    # rename) instead of failing the second run with ObjectExistsError.
    store.put_bytes(key, to_bytes(payload), overwrite=True)
    _delete(store, [older for older_epoch, older in _epochs(store, run_key) if older_epoch < epoch])
    return key


def discard_checkpoints(store: ObjectStore, run_key: str) -> int:
    """Delete a finished run's checkpoints; returns how many were deleted.

    Called once the run's model version is registered: from then on a rerun with the same
    inputs reuses that version, so the checkpoint (weights, best weights and optimiser
    state, ~180 MB for a ResNet-18) would only fill the disk. A failed delete is logged,
    not raised: the registered version is what matters, and the next reuse retries it.
    """
    return _delete(store, [key for _, key in _epochs(store, run_key)])


def _delete(store: ObjectStore, keys: list[str]) -> int:
    """Delete what can be deleted: a leftover checkpoint is only disk, and the next save or
    reuse of the run lists and retries it, so a failure is logged rather than raised."""
    deleted = 0
    for key in keys:
        try:
            store.delete(key)
            deleted += 1
        except StorageError as exc:
            log.warning("could not delete checkpoint %s: %s", key, exc)
    return deleted


def _epochs(store: ObjectStore, run_key: str) -> list[tuple[int, str]]:
    return [
        (int(m.group(1)), info.key)
        for info in store.list(checkpoint_prefix(run_key) + "/")
        if (m := _EPOCH.search(info.key))
    ]


def latest_checkpoint(store: ObjectStore, run_key: str) -> tuple[int, str] | None:
    found = _epochs(store, run_key)
    return max(found) if found else None


def load_latest(store: ObjectStore, run_key: str, attempts: int = 5) -> dict[str, Any] | None:
    """The newest checkpoint of the run, or None.

    Another training with the same run key deletes its older epochs as it saves newer
    ones, so the newest listed here may be gone by the time it is read: then list again
    (there is a newer one) rather than fail the resume.
    """
    for _ in range(attempts):
        latest = latest_checkpoint(store, run_key)
        if latest is None:
            return None
        try:
            return from_bytes(store.get_bytes(latest[1]))
        except ObjectNotFoundError:
            log.info("checkpoint %s was replaced while being read; listing again", latest[1])
    return None
