"""Subprocess bodies for the kill tests (run as scripts, never collected by pytest).

Each one does real work against the store and catalog named by the ``RETINA_*``
environment, as a worker's flow run would, and can be told to stop dead at one point:
it writes ``hanging`` (its pid) beside its output and sleeps, and the test SIGKILLs it.

    fault_worker.py train OUT [--hang-at-batch EPOCH,BATCH | --hang-in-register | --hang-before-decision]
    fault_worker.py embed OUT CACHE_KEY COUNT SHARD_SIZE [--hang-after-shard N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from retina_core import verbs
from retina_core.config import load_settings
from retina_core.domain import Modality
from retina_core.storage import ObjectStore


def hang(out: Path) -> None:
    (out.parent / "hanging").write_text(str(os.getpid()))
    time.sleep(600)  # the test kills us here with SIGKILL


class HangAfterPut:
    """The real store, except that the ``nth`` write of a matching key stops the process after it lands."""

    def __init__(self, store: ObjectStore, matches: Callable[[str], bool], nth: int, out: Path) -> None:
        self._store, self._matches, self._left, self._out = store, matches, nth, out

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        stored = self._store.put_bytes(key, data, overwrite=overwrite)
        if self._matches(key):
            self._left -= 1
            if self._left == 0:
                hang(self._out)
        return stored

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def embeddings(count: int) -> tuple[list[str], np.ndarray]:
    """Deterministic stand-ins: image ids and 8-wide vectors, the same in every run."""
    shas = [f"{i:064x}" for i in range(1, count + 1)]
    return shas, np.arange(count * 8, dtype=np.float32).reshape(count, 8) / 7.0


def train(args: argparse.Namespace) -> None:
    import retina_core.catalog.challenge as challenge
    import retina_core.training.run as run

    settings = load_settings()
    store: Any = verbs.curated_store(settings)
    on_batch = None
    if args.hang_at_batch:
        where = [int(x) for x in args.hang_at_batch.split(",")]

        def on_batch(epoch: int, batch: int) -> None:
            if [epoch, batch] == where:
                hang(args.out)

    if args.hang_in_register:  # after the first model file landed, before the row commits
        store = HangAfterPut(store, lambda key: key.startswith("models/"), 1, args.out)
    if args.hang_before_decision:  # the version row committed, the champion rule not yet applied
        challenge.challenge_champion = lambda *_, **__: hang(args.out)
    report = run.train_modality(
        settings, Modality.OCT, engine=verbs.catalog_engine(settings), store=store, on_batch=on_batch
    )
    args.out.write_text(report.model_dump_json())


def embed(args: argparse.Namespace) -> None:
    from retina_core.fusion.embedding_cache import EmbeddingCache

    settings = load_settings()
    store: Any = verbs.curated_store(settings)
    if args.hang_after_shard:  # the shard's object exists, its index rows are not committed
        store = HangAfterPut(store, lambda key: key.endswith(".safetensors"), args.hang_after_shard, args.out)
    cache = EmbeddingCache(store, verbs.catalog_engine(settings), args.cache_key, shard_size=args.shard_size)
    shas, vectors = embeddings(args.count)
    todo = set(cache.missing(shas))
    keep = [i for i, sha in enumerate(shas) if sha in todo]
    cache.put([shas[i] for i in keep], vectors[keep])
    args.out.write_text(json.dumps({"computed": len(keep), "reused": len(shas) - len(keep)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("out", type=Path)
    t.add_argument("--hang-at-batch")
    t.add_argument("--hang-in-register", action="store_true")
    t.add_argument("--hang-before-decision", action="store_true")
    e = sub.add_parser("embed")
    e.add_argument("out", type=Path)
    e.add_argument("cache_key")
    e.add_argument("count", type=int)
    e.add_argument("shard_size", type=int)
    e.add_argument("--hang-after-shard", type=int, default=0)
    args = parser.parse_args()
    {"train": train, "embed": embed}[args.command](args)


if __name__ == "__main__":
    main()
