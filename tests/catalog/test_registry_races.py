"""Issue 14, item 9: suspected races in the registry, checked with real concurrency."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event

from retina_core.catalog import registry
from retina_core.catalog.db import make_engine, migrate
from retina_core.catalog.registry import CHAMPION, list_versions, promote, register_version
from retina_core.storage import LocalObjectStore
from tests.support.postgres import fresh_database

NAME = "fundus_cnn"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
        migrate(eng)
        yield eng
        eng.dispose()
        return
    with fresh_database() as url:
        eng = make_engine(url)
        migrate(eng)
        yield eng
        eng.dispose()


def register(engine: Engine, store: LocalObjectStore, n: int) -> int:
    return register_version(
        engine,
        store,
        name=NAME,
        key=f"run-{n}",
        files={"weights.safetensors": f"weights {n}".encode()},
        primary_metric="qwk",
        primary=(0.5 + n / 100, 0.4, 0.6),
        data_version=1,
    ).version


def test_two_concurrent_promotions_leave_one_champion(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    first, second, third = (register(engine, store, n) for n in range(3))
    promote(engine, NAME, first, actor="test", reason="initial champion")

    # Both promotions read "the champion is v1" before either writes: the interleaving
    # that leaves two champions when nothing serialises them. The barrier times out when
    # the first promotion holds a lock the second must wait for (the fixed behaviour).
    both_read = threading.Barrier(2, timeout=3)
    real_champion_row = registry._champion_row

    def champion_row_then_wait(session, name):
        row = real_champion_row(session, name)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()
        return row

    monkeypatch.setattr(registry, "_champion_row", champion_row_then_wait)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def promote_in_thread(version: int) -> None:
        start.wait()
        try:
            promote(engine, NAME, version, actor="test", reason=f"race {version}")
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=promote_in_thread, args=(v,)) for v in (second, third)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    champions = [v.version for v in list_versions(engine, NAME) if v.status == CHAMPION]
    assert len(champions) == 1 and champions[0] in (second, third)


def test_weights_are_fsynced_before_the_version_row_commits(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refutes 'weights written without fsync before the registry row commits': the store
    fsyncs the temporary file, links it into place and fsyncs the folder, all inside the
    transaction that inserts the row, so a commit never precedes durable weights."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name what an fsync'd descriptor is")
    events: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        try:
            events.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            events.append("fsync ?")

    monkeypatch.setattr(os, "fsync", recording_fsync)
    event.listen(engine, "commit", lambda conn: events.append("commit"))
    store = LocalObjectStore(tmp_path / "store")
    version = register(engine, store, 7)
    weights_dir = str(tmp_path / "store" / "models" / NAME / str(version))
    commit = len(events) - 1 - events[::-1].index("commit")  # the registration's own commit
    synced = events[:commit]
    assert any(e.startswith(f"fsync {weights_dir}/") for e in synced), events  # the weights file
    assert f"fsync {weights_dir}" in synced, events  # and the folder entry that names it


def test_two_trainings_with_one_run_key_never_break_each_other(tmp_path: Path) -> None:
    """Two trainings of the same inputs (one run key) save each epoch in lockstep, with
    different bytes (as nondeterministic kernels give), and resume from whatever is newest:
    neither fails on the other's checkpoint nor loses the newest one to the other's clean-up."""
    import torch

    from retina_core.training.checkpoint import latest_checkpoint, load_latest, save_checkpoint

    store = LocalObjectStore(tmp_path / "store")
    in_step = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def train(worker: int) -> None:
        try:
            for epoch in range(4):
                in_step.wait()
                payload = {"epoch": epoch, "weights": torch.full((8,), float(worker))}
                save_checkpoint(store, "same-run-key", epoch, payload)
                in_step.wait()
                state = load_latest(store, "same-run-key")
                assert state is not None and state["epoch"] == epoch
        except BaseException as exc:
            errors.append(exc)
            in_step.abort()

    threads = [threading.Thread(target=train, args=(w,)) for w in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert latest_checkpoint(store, "same-run-key") == (3, "checkpoints/same-run-key/epoch-003.pt")
