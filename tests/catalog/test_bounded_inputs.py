"""Issue 14, items 4 and 5: what is checked is what is read, sizes are refused before reading,
stored files honour the umask, and manifests stream."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from retina_core import verbs
from retina_core.config import IngestSettings, Settings
from retina_core.data.rejections import SourceError
from retina_core.domain import Modality, Source
from retina_core.storage import LocalObjectStore, ObjectTooLarge
from tests.support.files import aptos_folder, image_bytes, write

GIB = 1 << 30


def sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that costs no disk (a hole), so tests can be 'large' cheaply."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def peak_allocated(call) -> int:
    tracemalloc.start()
    try:
        call()
    except Exception:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# -- item 4: no check-then-open race; umask ---------------------------------------------------


def test_a_file_swapped_for_a_link_between_check_and_open_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race as reproduced: the reader checks the path, then an attacker swaps the file
    for a link to a private file before it is opened. Here the swap happens the moment the
    reader first resolves the path; a reader that opens without following links never
    reads the private bytes, whenever the swap happens."""
    secret = write(tmp_path / "outside" / "secret.txt", b"PRIVATE-PATIENT-DATA" * 10)
    root = aptos_folder(tmp_path / "aptos", [("ok", "0"), ("swap", "1")], {"ok": image_bytes(seed=1)})
    target = root / "train_images" / "swap.png"
    write(target, b"not an image, will be quarantined with its bytes")
    real_realpath = os.path.realpath
    checks: list[str] = []

    def swapping_realpath(path, *args, **kwargs):
        """Swap right after the check that precedes the read (a reader checks the size first)."""
        resolved = real_realpath(path, *args, **kwargs)
        if str(path).endswith("swap.png"):
            checks.append(str(path))
            if len(checks) == 2 and not target.is_symlink():
                target.unlink()
                target.symlink_to(secret)
        return resolved

    monkeypatch.setattr(os.path, "realpath", swapping_realpath)
    settings = Settings(home=tmp_path / "home")
    verbs.ingest(settings, Source.APTOS, str(root))
    monkeypatch.undo()
    store = verbs.curated_store(settings)
    assert all(b"PRIVATE-PATIENT-DATA" not in store.get_bytes(i.key) for i in store.list())


def test_a_link_planted_before_the_read_is_quarantined_as_symlink(tmp_path: Path) -> None:
    secret = write(tmp_path / "outside" / "secret.png", image_bytes(seed=7))
    root = aptos_folder(
        tmp_path / "aptos",
        [("ok", "0"), ("swap", "1")],
        {"ok": image_bytes(seed=1), "swap": image_bytes(seed=2)},
    )
    settings = Settings(home=tmp_path / "home")
    candidates = verbs.scan_source(settings, Source.APTOS, str(root))  # checked while a file ...
    (root / "train_images" / "swap.png").unlink()
    (root / "train_images" / "swap.png").symlink_to(secret)  # ... then a link by read time
    outcomes = verbs.process_candidates(settings, Source.APTOS, str(root), candidates)
    summary = verbs.register_ingest(settings, Source.APTOS, str(root), outcomes)
    assert {q.path: q.reason.split(":")[0] for q in summary.quarantined} == {
        "train_images/swap.png": "symlink"
    }


def test_stored_objects_honour_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        store = LocalObjectStore(tmp_path / "store")
        store.put_bytes("images/x.png", b"x")
        store.get_file("images/x.png", tmp_path / "copy.png")
    finally:
        os.umask(old)
    assert (tmp_path / "store" / "images" / "x.png").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "copy.png").stat().st_mode & 0o777 == 0o640


# -- item 5: sizes refused before reading --------------------------------------------------


def test_an_oversized_object_is_refused_without_reading_it(tmp_path: Path) -> None:
    sparse_file(tmp_path / "store" / "masks" / "huge.png", GIB)
    store = LocalObjectStore(tmp_path / "store")
    with pytest.raises(ObjectTooLarge):
        store.get_bytes("masks/huge.png", max_bytes=1 << 20)
    assert peak_allocated(lambda: store.get_bytes("masks/huge.png", max_bytes=1 << 20)) < 8 << 20


def test_predict_refuses_an_oversized_input_before_reading_it(tmp_path: Path) -> None:
    from retina_core.predict import InvalidImage, read_input

    big = sparse_file(tmp_path / "huge.png", GIB)
    settings = Settings(home=tmp_path / "home")
    with pytest.raises(InvalidImage, match="exceeds"):
        read_input(big, Modality.FUNDUS, settings)
    assert peak_allocated(lambda: read_input(big, Modality.FUNDUS, settings)) < 8 << 20
    small = write(tmp_path / "small.png", image_bytes(seed=1))
    assert read_input(small, Modality.FUNDUS, settings) == small.read_bytes()


def test_an_oversized_pairs_mask_is_ignored_unread(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    write(root / "f" / "p1.png", image_bytes((48, 40), seed=1))
    write(root / "o" / "p1.jpeg", image_bytes((48, 40), mode="L", fmt="JPEG", seed=2))
    sparse_file(root / "masks" / "fundus" / "p1.png", GIB)  # where a mask for f/p1.png is looked for
    (root / "pairs.csv").write_text(
        "patient_id,eye,fundus_path,oct_path,dr_grade\nP1,OD,f/p1.png,o/p1.jpeg,2\n"
    )
    settings = Settings(home=tmp_path / "home")
    peak = peak_allocated(lambda: verbs.ingest(settings, Source.PAIRS, str(root / "pairs.csv")))
    assert peak < 64 << 20
    assert not list(verbs.curated_store(settings).list("masks/"))


def test_a_csv_field_past_the_csv_limit_is_a_clear_source_error(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    root.mkdir()
    (root / "pairs.csv").write_text(
        "patient_id,eye,fundus_path,oct_path\n"
        + "P1,OD,f/a.png,o/a.jpeg\n"
        + "P2,OD,"
        + "x" * 200_000
        + ",o\n"
    )
    with pytest.raises(SourceError, match=r"pairs\.csv line \d+"):
        verbs.ingest(Settings(home=tmp_path / "home"), Source.PAIRS, str(root / "pairs.csv"))


def test_a_long_field_quarantines_its_row_only(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    write(root / "f" / "p1.png", image_bytes(seed=1))
    write(root / "o" / "p1.jpeg", image_bytes(mode="L", fmt="JPEG", seed=2))
    (root / "pairs.csv").write_text(
        "patient_id,eye,fundus_path,oct_path\nP1,OD,f/p1.png,o/p1.jpeg\n"
        + "P2,OD,"
        + "y" * 5000
        + ",o/x.jpeg\n"
    )
    summary = verbs.ingest(Settings(home=tmp_path / "home"), Source.PAIRS, str(root / "pairs.csv"))
    assert summary.new_pairs == 1
    assert {q.reason.split(":")[0] for q in summary.quarantined} == {"bad_row"}


def test_manifest_byte_and_row_limits_refuse_before_ingesting(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    root.mkdir()
    rows = "".join(f"P{i},OD,f/{i}.png,o/{i}.jpeg\n" for i in range(50))
    (root / "pairs.csv").write_text("patient_id,eye,fundus_path,oct_path\n" + rows)
    few_rows = Settings(home=tmp_path / "h1", ingest=IngestSettings(max_manifest_rows=10))
    with pytest.raises(SourceError, match="more than 10 rows"):
        verbs.ingest(few_rows, Source.PAIRS, str(root / "pairs.csv"))
    few_bytes = Settings(home=tmp_path / "h2", ingest=IngestSettings(max_manifest_bytes=100))
    with pytest.raises(SourceError, match="over the 100-byte manifest limit"):
        verbs.ingest(few_bytes, Source.PAIRS, str(root / "pairs.csv"))


def test_large_manifest_bench_row_runs_on_a_small_manifest(tmp_path: Path) -> None:
    """The `make bench` row's machinery (manifest writer, child-process ingest); no speed asserted."""
    from benchmarks.large_manifest import measure_ingest, write_manifest

    manifest = write_manifest(tmp_path / "landing", 200)
    for via in ("verbs", "flow"):
        figures = measure_ingest(tmp_path / via, manifest, via=via)
        assert figures["scanned"] == 400 and figures["quarantined"] == 200 and figures["peak_rss_mb"] > 0
