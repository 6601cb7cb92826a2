"""One hostile entry never sinks an ingest: each gets a quarantine reason, the rest is catalogued,
and SQLite and PostgreSQL give the same verdicts (issue 14, item 3)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from retina_core import verbs
from retina_core.catalog.repository import export_images
from retina_core.config import Settings
from retina_core.domain import Source
from tests.support.files import image_bytes, write
from tests.support.postgres import fresh_database

DEPTH = 1000
LONG_PATIENT = "9" * 200


def oct_jpeg(seed: int) -> bytes:
    return image_bytes(mode="L", fmt="JPEG", seed=seed)


def deep_file(top: Path, depth: int, name: str, data: bytes) -> str:
    """A file ``depth`` folders below ``top``, built through directory descriptors (the path
    is longer than most tools handle); returns its key relative to ``top``."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        out = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)
    return "d/" * depth + name


def remove_deep(top: Path, depth: int, name: str) -> None:
    """Undo :func:`deep_file` bottom-up (``shutil.rmtree`` recurses, and pytest's clean-up with it)."""
    fds = [os.open(top, os.O_RDONLY)]
    for _ in range(depth):
        fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
    os.unlink(name, dir_fd=fds[-1])
    for parent in reversed(fds[:-1]):
        os.close(fds.pop())
        os.rmdir("d", dir_fd=parent)
    os.close(fds.pop())


@pytest.fixture
def deep_tree(tmp_path: Path) -> Iterator[Path]:
    """Where :func:`hostile_kermany` plants its deep tree; removed afterwards without recursion."""
    top = tmp_path / "kermany" / "OCT2017" / "train"
    top.mkdir(parents=True)
    yield top
    if (top / "d").exists():
        remove_deep(top, DEPTH, "CNV-4000-1.jpeg")


def hostile_kermany(root: Path, outside: Path) -> dict[str, str]:
    """A Kermany folder with good scans and one of each hostile entry; returns expected reasons."""
    cnv = root / "OCT2017" / "train" / "CNV"
    for n in range(3):
        write(cnv / f"CNV-100{n}-1.jpeg", oct_jpeg(n))
    with open(os.fsencode(cnv) + b"/CNV-2000-\xff\xfe.jpeg", "wb") as fh:  # not UTF-8
        fh.write(oct_jpeg(10))
    write(cnv / f"CNV-{LONG_PATIENT}-1.jpeg", oct_jpeg(11))
    secret = write(outside / "secret.jpeg", oct_jpeg(12))
    os.symlink(secret, cnv / "CNV-3000-1.jpeg")
    deep = deep_file(root / "OCT2017" / "train", DEPTH, "CNV-4000-1.jpeg", oct_jpeg(13))
    return {
        "OCT2017/train/CNV/CNV-2000-\\xff\\xfe.jpeg": "bad_name",
        f"OCT2017/train/CNV/CNV-{LONG_PATIENT}-1.jpeg": "bad_row",
        "OCT2017/train/CNV/CNV-3000-1.jpeg": "symlink",
        f"OCT2017/train/{deep}": "unparseable_name",
    }


def hostile_pairs(root: Path) -> dict[str, str]:
    """A pairs manifest with a NUL byte in a patient id and in a path, beside a good row."""
    write(root / "f" / "p1.png", image_bytes(seed=1))
    write(root / "o" / "p1.jpeg", oct_jpeg(2))
    write(root / "f" / "p2.png", image_bytes(seed=3))
    write(root / "o" / "p2.jpeg", oct_jpeg(4))
    (root / "pairs.csv").write_bytes(
        b"patient_id,eye,fundus_path,oct_path,dr_grade,oct_class\n"
        b"P1,OD,f/p1.png,o/p1.jpeg,2,DME\n"
        b"P\x002,OS,f/p2.png,o/p2.jpeg,0,NORMAL\n"
        b"P3,OS,f/p\x003.png,o/p2.jpeg,0,NORMAL\n"
    )
    return {"f/p2.png": "bad_row", "o/p2.jpeg": "bad_row", "f/p\\x003.png": "bad_name"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with fresh_database() as url:
        yield url


def reasons(summary) -> dict[str, str]:
    return {q.path: q.reason.split(":")[0] for q in summary.quarantined}


def test_hostile_kermany_entries_are_quarantined_and_the_rest_ingested(
    tmp_path: Path, deep_tree: Path, database_url: str | None
) -> None:
    expected = hostile_kermany(tmp_path / "kermany", tmp_path / "outside")
    settings = Settings(home=tmp_path / "home", database_url=database_url)
    summary = verbs.ingest(settings, Source.KERMANY, str(tmp_path / "kermany"))
    assert reasons(summary) == expected
    assert summary.accepted == 3
    assert {r["patient_id"] for r in export_images(verbs.catalog_engine(settings))} == {
        "1000",
        "1001",
        "1002",
    }
    # The link was recorded, not followed: its target's bytes were never copied.
    store = verbs.curated_store(settings)
    secret = oct_jpeg(12)
    assert all(store.get_bytes(i.key) != secret for i in store.list("quarantine/"))


def test_nul_bytes_in_a_pairs_manifest_are_quarantined(tmp_path: Path, database_url: str | None) -> None:
    expected = hostile_pairs(tmp_path / "pairs")
    settings = Settings(home=tmp_path / "home", database_url=database_url)
    summary = verbs.ingest(settings, Source.PAIRS, str(tmp_path / "pairs" / "pairs.csv"))
    assert reasons(summary) == expected
    assert summary.new_pairs == 1
    assert {r["patient_id"] for r in export_images(verbs.catalog_engine(settings))} == {"P1", "P3"}
