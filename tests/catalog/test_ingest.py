"""Ingestion end to end through retina_core.verbs: quarantine, idempotency, concurrency, splits."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, event

from retina_core import verbs
from retina_core.catalog.repository import export_images
from retina_core.config import Settings
from retina_core.data.rejections import SourceError
from retina_core.domain import Source
from retina_core.results import IngestSummary
from tests.support.files import aptos_folder, image_bytes, png_bomb, write
from tests.support.postgres import fresh_database


def make_settings(home: Path, database_url: str | None = None) -> Settings:
    return Settings(home=home, database_url=database_url)


def reasons(summary) -> dict[str, str]:
    return {q.path: q.reason.split(":")[0] for q in summary.quarantined}


def broken_aptos(root: Path) -> Path:
    good = {f"good{i}": image_bytes(seed=i) for i in range(4)}
    files = {
        **good,
        "empty": b"",
        "truncated": image_bytes(seed=9)[:150],
        "text": b"hello, I am not a picture",
        "bomb": png_bomb(9000, 9000),
        "nolabel": image_bytes(seed=11),
        "nan": image_bytes(seed=12),
        "range": image_bytes(seed=13),
        "orphan": image_bytes(seed=14),
    }
    rows = [(k, str(i % 5)) for i, k in enumerate(good)]
    rows += [("empty", "0"), ("truncated", "1"), ("text", "2"), ("bomb", "3")]
    rows += [("nolabel", ""), ("nan", "severe"), ("range", "7"), ("missing", "1"), ("../../etc/passwd", "0")]
    aptos_folder(root, rows, {k: v for k, v in files.items()})
    return root


def test_every_bad_aptos_file_is_quarantined_with_a_reason(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    summary = verbs.ingest(settings, Source.APTOS, str(broken_aptos(tmp_path / "aptos")))
    assert summary.accepted == 4 and summary.already_known == 0
    assert reasons(summary) == {
        "train_images/empty.png": "empty",
        "train_images/truncated.png": "corrupt",
        "train_images/text.png": "not_an_image",
        "train_images/bomb.png": "too_many_pixels",
        "train_images/nolabel.png": "label_missing",
        "train_images/nan.png": "label_not_a_number",
        "train_images/range.png": "label_out_of_range",
        "train_images/missing.png": "file_missing",
        "train_images/../../etc/passwd.png": "path_escape",
        "train_images/orphan.png": "unlabeled",
    }
    # The rejected bytes are kept with a reason next to them; nothing is lost.
    store = verbs.curated_store(settings)
    reason_files = [i.key for i in store.list("quarantine/aptos/") if i.key.endswith("reason.json")]
    unreachable = [
        q for q in summary.quarantined if q.reason.split(":")[0] in ("file_missing", "path_escape")
    ]
    assert len(reason_files) == len(summary.quarantined) - len(unreachable)  # no bytes, no object
    kept = json.loads(store.get_bytes(next(k for k in reason_files if b"truncated" in store.get_bytes(k))))
    assert kept["reason"] == "corrupt"
    exported = export_images(verbs.catalog_engine(settings))
    assert len(exported) == 4 and all(r["label"] is not None for r in exported)


def test_unusable_location_raises_source_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    with pytest.raises(SourceError):
        verbs.ingest(settings, Source.APTOS, str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"train\.csv"):
        verbs.ingest(settings, Source.APTOS, str(tmp_path / "empty"))


def test_symlink_escaping_the_landing_root_is_quarantined(tmp_path: Path) -> None:
    secret = write(tmp_path / "outside" / "secret.png", image_bytes(seed=5) + b"private")
    root = aptos_folder(tmp_path / "aptos", [("ok", "0"), ("link", "1")], {"ok": image_bytes(seed=1)})
    os.symlink(secret, root / "train_images" / "link.png")
    summary = verbs.ingest(make_settings(tmp_path / "home"), Source.APTOS, str(root))
    assert summary.accepted == 1
    assert reasons(summary) == {"train_images/link.png": "symlink"}  # never followed, never copied
    store = verbs.curated_store(make_settings(tmp_path / "home"))
    assert all(b"private" not in store.get_bytes(i.key) for i in store.list("quarantine/"))


def kermany_folder(root: Path) -> Path:
    base = root / "OCT2017"
    for split, cls, patient, n in [
        ("train", "CNV", "1000001", 1),
        ("train", "CNV", "1000001", 2),
        ("test", "CNV", "1000001", 3),
        ("train", "DME", "1000002", 1),
        ("train", "NORMAL", "1000003", 1),
        ("test", "DRUSEN", "1000004", 1),
    ]:
        write(
            base / split / cls / f"{cls}-{patient}-{n}.jpeg",
            image_bytes(mode="L", fmt="JPEG", seed=int(patient) * 10 + n),
        )
    write(base / "train" / "DME" / "CNV-1000005-1.jpeg", image_bytes(mode="L", fmt="JPEG", seed=77))
    write(base / "train" / "GLAUCOMA" / "GLAUCOMA-1000006-1.jpeg", image_bytes(mode="L", fmt="JPEG", seed=78))
    write(base / "train" / "NORMAL" / "scan.jpeg", image_bytes(mode="L", fmt="JPEG", seed=79))
    write(base / "train" / "NORMAL" / "NORMAL-1000007-1.jpeg", image_bytes(mode="RGB", fmt="JPEG", seed=80))
    write(
        base / "train" / "NORMAL" / "NORMAL-1000008-1.jpeg", image_bytes(mode="L", fmt="JPEG", seed=80)[:400]
    )
    return root


def test_kermany_layout_mislabels_and_patient_split_leak(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    summary = verbs.ingest(settings, Source.KERMANY, str(kermany_folder(tmp_path / "kermany")))
    assert reasons(summary) == {
        "OCT2017/train/DME/CNV-1000005-1.jpeg": "class_mismatch",
        "OCT2017/train/GLAUCOMA/GLAUCOMA-1000006-1.jpeg": "unknown_class",
        "OCT2017/train/NORMAL/scan.jpeg": "unparseable_name",
        "OCT2017/train/NORMAL/NORMAL-1000008-1.jpeg": "corrupt",
    }
    assert summary.accepted == 7  # includes an RGB OCT scan, normalised later to L
    rows = export_images(verbs.catalog_engine(settings))
    splits_of_1000001 = {r["split"] for r in rows if r["patient_id"] == "1000001"}
    assert len(splits_of_1000001) == 1, "a patient in both train/ and test/ folders must land in one split"


def test_reingest_is_idempotent_and_versions_only_change_with_content(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    root = aptos_folder(
        tmp_path / "aptos",
        [("a", "0"), ("b", "2"), ("c", "2")],
        {"a": image_bytes(seed=1), "b": image_bytes(seed=2), "c": image_bytes(seed=2)},
    )
    first = verbs.ingest(settings, Source.APTOS, str(root))
    assert (first.accepted, first.duplicates, first.dataset_version) == (2, 1, 1)
    store_keys = sorted(i.key for i in verbs.curated_store(settings).list("images/"))
    second = verbs.ingest(settings, Source.APTOS, str(root))
    assert (second.accepted, second.already_known, second.dataset_version) == (0, 2, 1)
    assert sorted(i.key for i in verbs.curated_store(settings).list("images/")) == store_keys
    write(root / "train_images" / "d.png", image_bytes(seed=4))
    (root / "train.csv").write_text((root / "train.csv").read_text() + "d,4\n")
    third = verbs.ingest(settings, Source.APTOS, str(root))
    assert (third.accepted, third.dataset_version, third.new_images) == (1, 2, {"fundus": 1})


def test_same_bytes_with_a_different_label_is_a_conflict(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    same = image_bytes(seed=3)
    verbs.ingest(settings, Source.APTOS, str(aptos_folder(tmp_path / "a1", [("x", "1")], {"x": same})))
    summary = verbs.ingest(
        settings, Source.APTOS, str(aptos_folder(tmp_path / "a2", [("y", "4")], {"y": same}))
    )
    assert reasons(summary) == {"train_images/y.png": "label_conflict"}
    assert [r["label"] for r in export_images(verbs.catalog_engine(settings))] == [1]


def test_pairs_manifest(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    write(root / "f" / "p1.png", image_bytes(seed=1))
    write(root / "o" / "p1.jpeg", image_bytes(mode="L", fmt="JPEG", seed=2))
    write(root / "f" / "p2.png", image_bytes(seed=3))
    write(root / "o" / "p3.jpeg", image_bytes(mode="L", fmt="JPEG", seed=4))
    (root / "pairs.csv").write_text(
        "patient_id,eye,fundus_path,oct_path,dr_grade,oct_class\n"
        "P1,OD,f/p1.png,o/p1.jpeg,2,DME\n"
        "P2,left,f/p2.png,o/missing.jpeg,0,NORMAL\n"
        "P3,OS,../escape.png,o/p3.jpeg,0,NORMAL\n"
    )
    settings = make_settings(tmp_path / "home")
    summary = verbs.ingest(settings, Source.PAIRS, str(root / "pairs.csv"))
    assert summary.new_pairs == 1
    assert reasons(summary) == {"o/missing.jpeg": "file_missing", "../escape.png": "path_escape"}
    rows = {(r["modality"], r["patient_id"]): r for r in export_images(verbs.catalog_engine(settings))}
    assert rows[("fundus", "P1")]["label"] == 2 and rows[("oct", "P1")]["label"] == 1
    assert rows[("fundus", "P1")]["split"] == rows[("oct", "P1")]["split"]


def _overlapping_sources(tmp_path: Path) -> tuple[Path, Path, int, set[str]]:
    """Two APTOS folders sharing ten of their twenty images each; the shared images' hashes."""
    images = {f"img{i}": image_bytes(seed=100 + i) for i in range(30)}
    a = aptos_folder(
        tmp_path / "a",
        [(k, str(i % 5)) for i, k in enumerate(images) if i < 20],
        {k: v for i, (k, v) in enumerate(images.items()) if i < 20},
    )
    b = aptos_folder(
        tmp_path / "b",
        [(k, str(i % 5)) for i, k in enumerate(images) if i >= 10],
        {k: v for i, (k, v) in enumerate(images.items()) if i >= 10},
    )
    shared = {hashlib.sha256(v).hexdigest() for i, v in enumerate(images.values()) if 10 <= i < 20}
    return a, b, len(images), shared


class WriteRace:
    """Forces two ingest transactions to overlap inside the catalog's write path.

    PostgreSQL runs writers side by side: each ingest stops at a barrier right before it
    inserts its first *shared* image, so both transactions are open, neither has committed,
    and both then insert the same rows; only the conflict handling keeps one from failing.

    SQLite admits one writer at a time (the other waits in its busy handler), so a barrier
    inside both transactions would never be reached by the second. There the ingest that
    first holds the write lock waits until the other's first INSERT has *started executing*
    (SQLite's trace hook, called before the statement takes its lock): the second writer is
    then certainly queued behind an open transaction. ``events`` records the order seen.
    """

    FIRST_WRITE = "INSERT INTO ingest_runs"

    def __init__(self, engine: Engine, shared: set[str]) -> None:
        self.engine = engine
        self.shared = shared
        self.postgres = engine.dialect.name == "postgresql"
        self.barrier = threading.Barrier(2, timeout=60)
        self.changed = threading.Condition()
        self.events: list[tuple[str, str]] = []
        self.met_at_barrier: set[str] = set()
        self._holder: str | None = None

    def _note(self, what: str) -> None:
        with self.changed:
            self.events.append((threading.current_thread().name, what))
            self.changed.notify_all()

    def _seen(self, what: str, other_than: str) -> bool:
        return any(who != other_than and event == what for who, event in self.events)

    def before(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        me = threading.current_thread().name
        if self.postgres:
            if (
                statement.startswith("INSERT INTO images")
                and parameters.get("sha256") in self.shared
                and me not in self.met_at_barrier
            ):
                self.met_at_barrier.add(me)
                self.barrier.wait()  # both transactions open, about to insert the same image
        elif statement.startswith(self.FIRST_WRITE):
            conn.connection.dbapi_connection.set_trace_callback(self._trace)

    def _trace(self, sql: str) -> None:
        if sql.startswith(self.FIRST_WRITE):
            self._note("first write executing")

    def after(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if self.postgres or not statement.startswith(self.FIRST_WRITE):
            return
        me = threading.current_thread().name
        self._note("holds the write lock")
        with self.changed:
            if self._holder is None:  # the first writer waits, lock held, for the other to queue up
                self._holder = me
                if not self.changed.wait_for(lambda: self._seen("first write executing", me), timeout=60):
                    raise TimeoutError("the other ingest never started writing")

    def commit(self, conn) -> None:  # type: ignore[no-untyped-def]
        self._note("committed")

    def __enter__(self) -> WriteRace:
        event.listen(self.engine, "before_cursor_execute", self.before)
        event.listen(self.engine, "after_cursor_execute", self.after)
        event.listen(self.engine, "commit", self.commit)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self.before)
        event.remove(self.engine, "after_cursor_execute", self.after)
        event.remove(self.engine, "commit", self.commit)

    def assert_overlapped(self) -> None:
        if self.postgres:
            assert self.met_at_barrier == {"ingest-a", "ingest-b"}
            return
        holder = self._holder
        assert holder is not None
        other = "ingest-b" if holder == "ingest-a" else "ingest-a"
        first_write, committed = (other, "first write executing"), (holder, "committed")
        # the other's write began before the holder committed, and got the lock only after that commit
        assert self.events.index(first_write) < self.events.index(committed)
        assert self.events.index(committed) < self.events.index((other, "holds the write lock"))


def _race(tmp_path: Path, database_url: str | None) -> None:
    a, b, total, shared = _overlapping_sources(tmp_path)
    settings = make_settings(tmp_path / "home", database_url)
    engine = verbs.catalog_engine(settings)  # schema first; the race is on rows
    results: dict[str, IngestSummary] = {}

    def ingest(name: str, location: Path) -> None:
        threading.current_thread().name = name
        results[name] = verbs.ingest(settings, Source.APTOS, str(location))

    with WriteRace(engine, shared) as race, ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(ingest, "ingest-a", a), pool.submit(ingest, "ingest-b", b)]:
            future.result()
    race.assert_overlapped()
    rows = export_images(engine)
    assert len(rows) == total == len({r["sha256"] for r in rows})
    assert sum(r.accepted for r in results.values()) == total
    assert sum(r.already_known for r in results.values()) == 40 - total
    assert all(not r.quarantined for r in results.values())


def test_two_concurrent_ingests_register_each_image_once_sqlite(tmp_path: Path) -> None:
    _race(tmp_path, None)


@pytest.mark.postgres
def test_two_concurrent_ingests_register_each_image_once_postgres(tmp_path: Path) -> None:
    with fresh_database() as url:
        _race(tmp_path, url)


@pytest.mark.postgres
def test_catalog_on_postgres_reingest_and_conflicts(tmp_path: Path) -> None:
    with fresh_database() as url:
        settings = make_settings(tmp_path / "home", url)
        summary = verbs.ingest(settings, Source.APTOS, str(broken_aptos(tmp_path / "aptos")))
        assert summary.accepted == 4 and len(summary.quarantined) == 10
        again = verbs.ingest(settings, Source.APTOS, str(tmp_path / "aptos"))
        assert (again.accepted, again.already_known, again.dataset_version) == (0, 4, summary.dataset_version)


def test_lesion_masks_beside_synthetic_images_are_kept(tmp_path: Path) -> None:
    from retina_core.data.ingest import mask_key
    from retina_core.data.synthetic import SynthSpec, write_synthetic

    write_synthetic(tmp_path / "synth", SynthSpec(fundus=8, oct=8, pairs=3, size=64, seed=2))
    settings = make_settings(tmp_path / "home")
    for source, location in (
        (Source.APTOS, "aptos"),
        (Source.KERMANY, "kermany"),
        (Source.PAIRS, "pairs.csv"),
    ):
        verbs.ingest(settings, source, str(tmp_path / "synth" / location))
    store = verbs.curated_store(settings)
    rows = export_images(verbs.catalog_engine(settings))
    with_mask = {r["sha256"] for r in rows if store.exists(mask_key(r["sha256"]))}
    diseased = {
        r["sha256"]
        for r in rows
        if r["label"] is not None
        and ((r["modality"] == "fundus" and r["label"] > 0) or (r["modality"] == "oct" and r["label"] != 3))
    }
    assert with_mask and with_mask == diseased
