"""Issue 14: escaped database URLs, errors a person can act on, exports as data, plain run ids."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from retina_cli.app import app
from retina_core import verbs
from retina_core.config import Settings
from retina_core.domain import Source
from tests.support.files import aptos_folder, image_bytes
from tests.support.postgres import fresh_database

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("RETINA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RETINA_STORAGE_URL", raising=False)
    monkeypatch.delenv("RETINA_DATABASE_URL", raising=False)
    return monkeypatch


PROGRESS_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] ")


def one_line_error(result, *needles: str, after_progress: bool = False) -> str:
    """The command failed with exit 2 and one ``error:`` line naming ``needles``, no traceback.

    ``after_progress``: a command that got as far as running a flow has printed its progress
    lines first (plain ``[HH:MM:SS] stage: …`` lines when stderr is not a terminal); the
    error line then ends the output, and nothing else is there: no Prefect failure report.
    """
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    if after_progress:
        progress, lines = lines[:-1], lines[-1:]
        assert all(PROGRESS_LINE.match(line) for line in progress), result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- item 2: database URLs -----------------------------------------------------------------


def test_sqlite_catalog_under_a_home_with_percent_space_and_hash(tmp_path: Path) -> None:
    home = tmp_path / "50% done #2 x"
    settings = Settings(home=home)
    root = aptos_folder(tmp_path / "aptos", [("a", "1")], {"a": image_bytes(seed=1)})
    assert verbs.ingest(settings, Source.APTOS, str(root)).accepted == 1
    assert (home / "catalog.db").is_file()  # the file the home names, not a truncated one


@pytest.mark.postgres
def test_postgres_url_with_escaped_characters_migrates(tmp_path: Path) -> None:
    """A database whose name holds ``%`` and ``@`` (escaped in the URL as %25 and %40), the
    same escaping a password with those characters gets. The shared test role's password
    cannot be changed here, so the database name carries the characters instead."""
    from sqlalchemy import create_engine, text

    from tests.support.postgres import _drop, admin_url

    name = f"retina_{os.getpid()}_50%_p@ss"
    admin = create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
        assert "%25" in url and "%40" in url
        settings = Settings(home=tmp_path / "home", database_url=url)
        root = aptos_folder(tmp_path / "aptos", [("a", "1")], {"a": image_bytes(seed=1)})
        assert verbs.ingest(settings, Source.APTOS, str(root)).accepted == 1
        verbs._ENGINES.pop(url).dispose()
    finally:
        _drop(admin, name)
        admin.dispose()


@pytest.mark.postgres
def test_a_failing_database_url_never_prints_its_password(env: pytest.MonkeyPatch) -> None:
    with fresh_database() as url:
        wrong = make_url(url).set(password="s3cr@t%pw").render_as_string(hide_password=False)
        assert "s3cr%40t%25pw" in wrong
        env.setenv("RETINA_DATABASE_URL", wrong)
        result = runner.invoke(app, ["catalog", "export"])
        line = one_line_error(result, "catalog database")
        for spelling in ("s3cr%40t%25pw", "s3cr@t%pw", "s3cr"):
            assert spelling not in result.output, line


# -- item 8: errors a person can act on ----------------------------------------------------


def test_home_that_is_a_file_is_one_line_and_exit_two(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    env.setenv("RETINA_HOME", str(home))
    one_line_error(runner.invoke(app, ["catalog", "export"]), str(home), "is a file")


def test_verbose_keeps_the_traceback(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    env.setenv("RETINA_HOME", str(home))
    result = runner.invoke(app, ["-v", "catalog", "export"])
    assert result.exit_code != 0 and result.exception is not None
    assert "is a file" in str(result.exception)


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs when we may mount one (root ignores permission bits), else chmod 555."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_read_only_home_is_one_line_and_exit_two(read_only_folder: Path, env: pytest.MonkeyPatch) -> None:
    home = read_only_folder / "home"
    env.setenv("RETINA_HOME", str(home))
    one_line_error(runner.invoke(app, ["catalog", "export"]), str(home))
    env.setenv("RETINA_HOME", str(read_only_folder))  # the folder itself exists but is read-only
    one_line_error(runner.invoke(app, ["catalog", "export"]), str(read_only_folder), "not writable")


FULL_DISK = """
import errno, os, sys
import retina_core.storage.local as local

def full_disk(directory, write):  # what a full filesystem answers to the first write
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))

local.temporary_file = full_disk
sys.argv = ["retina", *sys.argv[1:]]
from retina_cli.app import app
app()
"""


def test_full_disk_during_ingest_is_one_line_naming_the_store(tmp_path: Path) -> None:
    """Through the real command in its own process: Prefect's failed-run reports (a task's
    traceback, then the flow's) stay off the terminal; the command's one line says it all."""
    root = aptos_folder(tmp_path / "aptos", [("a", "1")], {"a": image_bytes(seed=1)})
    env = os.environ | {"RETINA_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)

    def retina(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", FULL_DISK, *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    quiet = retina("ingest", "aptos", str(root))
    assert quiet.returncode == 2, quiet.stderr
    assert "Traceback" not in quiet.stderr + quiet.stdout, quiet.stderr
    lines = quiet.stderr.strip().splitlines()
    assert all(PROGRESS_LINE.match(line) for line in lines[:-1]), quiet.stderr
    assert lines[-1].startswith("error: ") and "No space left on device" in lines[-1], quiet.stderr
    assert str(tmp_path / "home" / "store") in lines[-1]

    verbose = retina("-v", "ingest", "aptos", str(root))
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr
    assert "No space left on device" in verbose.stderr


# -- item 6: exports are data --------------------------------------------------------------


def test_export_neutralises_formulas_and_quotes_tabs_and_newlines(tmp_path: Path, env) -> None:
    from sqlalchemy import update

    from retina_core.catalog.models import ImageRow

    hostile = ["=cmd|' /C calc'!A0", "+SUM(A1:A9)", "-2+3", "@SUM(1)", "a\tb", "c\nd", "\rX", "plain"]
    root = aptos_folder(
        tmp_path / "aptos",
        [(f"i{n}", "1") for n in range(len(hostile))],
        {f"i{n}": image_bytes(seed=200 + n) for n in range(len(hostile))},
    )
    settings = Settings(home=tmp_path / "home")
    verbs.ingest(settings, Source.APTOS, str(root))
    # Ingest refuses control characters in ids now; older catalogs (and other writers) may hold them.
    with verbs.catalog_engine(settings).begin() as conn:
        for n, pid in enumerate(hostile):
            conn.execute(
                update(ImageRow)
                .where(ImageRow.source_path == f"train_images/i{n}.png")
                .values(patient_id=pid)
            )
    result = runner.invoke(app, ["catalog", "export"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout, newline=""), dialect="excel-tab"))
    assert rows[0] == ["sha256", "modality", "source", "patient_id", "label", "split"]
    assert len(rows) == 1 + len(hostile), "a tab or newline in a cell must not split the row"
    cells = {r[3] for r in rows[1:]}
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert cells == {("'" + p if p[:1] in "=+-@\t\r" else p) for p in hostile}


# -- item 7: plain run ids -----------------------------------------------------------------


def test_report_refuses_a_run_id_that_is_a_path(tmp_path: Path, env: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "x"
    (outside).mkdir()
    (outside / "report.json").write_text("{}")
    result = runner.invoke(app, ["report", "--run", "../../x"])
    one_line_error(result, "not a plain id")
    assert not (outside / "index.html").exists()


def test_pipeline_parameters_refuse_a_run_id_that_is_a_path() -> None:
    from pydantic import ValidationError

    from flows.pipeline import PipelineParams

    with pytest.raises(ValidationError):
        PipelineParams(run_id="../../x")
    assert PipelineParams(run_id="20260101T000000-abc123").run_id == "20260101T000000-abc123"


# -- item 3: one retry rule, for transient I/O only -----------------------------------------


def test_ingest_tasks_retry_transient_io_only() -> None:
    """A hostile file fails the same way every time; before, any error was retried three
    times (2 + 5 + 15 s) before the run failed anyway."""
    from prefect.states import Failed

    from retina_core.storage import StorageUnavailable
    from tasks.ingest import ingest_files, register_ingest, scan_source

    for task in (scan_source, ingest_files, register_ingest):
        rule = task.retry_condition_fn
        assert (
            rule(task, None, Failed(data=UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogate"))) is False
        )
        assert rule(task, None, Failed(data=RecursionError("deep tree"))) is False
        assert rule(task, None, Failed(data=StorageUnavailable("S3 did not answer"))) is True


def test_a_manifest_field_past_the_csv_limit_exits_two_with_its_line(tmp_path: Path, env) -> None:
    """Before: an uncaught csv.Error, retried three times, exit 1 with a traceback."""
    root = tmp_path / "pairs"
    root.mkdir()
    (root / "pairs.csv").write_text(
        "patient_id,eye,fundus_path,oct_path\nP1,OD,f/a.png,o/a.jpeg\nP2,OD," + "x" * 200_000 + ",o\n"
    )
    result = runner.invoke(app, ["ingest", "pairs", str(root / "pairs.csv"), "--json"])
    assert result.stdout == ""
    one_line_error(result, "pairs.csv line", "field larger than field limit", after_progress=True)
