"""A throwaway PostgreSQL database per test, or a skip that says why."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

DEFAULT_URL = "postgresql+psycopg://retina:retina@127.0.0.1:5432/retina_test"


def admin_url() -> str:
    return os.environ.get("RETINA_TEST_POSTGRES_URL", DEFAULT_URL)


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it afterwards."""
    url = make_url(admin_url())
    try:
        admin = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # no server here: skip by name, never fail
        pytest.skip(
            f"PostgreSQL not reachable at {url.render_as_string(hide_password=True)}: {type(exc).__name__}"
        )
    name = f"retina_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        _drop(admin, name)
        admin.dispose()


def _drop(admin: Engine, name: str, attempts: int = 20) -> None:
    """DROP ... WITH (FORCE), retried while an autovacuum worker is in the database.

    A non-superuser may not terminate autovacuum (PostgreSQL 15 answers "must be a member
    of the role whose process is being terminated"); the worker is done within moments on
    a test-sized database, so waiting beats failing the test's teardown.
    """
    for attempt in range(attempts):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except ProgrammingError as exc:
            if "pg_signal_backend" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.5)
