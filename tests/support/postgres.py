"""A throwaway PostgreSQL database per test; a skip only when no server listens.

"Not reachable" means exactly that: nothing accepts a connection at the configured host
and port (refused, no route). A server that answers but refuses the test (wrong password,
missing database, no CREATEDB right) is a failure that says so, never a skip that reads
like "no server here". Where CI has started PostgreSQL it sets ``RETINA_TEST_POSTGRES_REQUIRED=1``
and then even an unreachable server fails the run.
"""

from __future__ import annotations

import errno
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ProgrammingError

DEFAULT_URL = "postgresql+psycopg://retina:retina@127.0.0.1:5432/retina_test"
REQUIRED_ENV = "RETINA_TEST_POSTGRES_REQUIRED"
"""Set (to anything but empty or 0) where PostgreSQL was started for the tests."""

NOTHING_LISTENS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}


def admin_url() -> str:
    return os.environ.get("RETINA_TEST_POSTGRES_URL", DEFAULT_URL)


def postgres_required() -> bool:
    return os.environ.get(REQUIRED_ENV, "").strip().lower() not in {"", "0", "false", "no"}


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail with it where PostgreSQL is expected."""
    if postgres_required():
        pytest.fail(f"{reason} ({REQUIRED_ENV} is set: PostgreSQL was expected here)", pytrace=False)
    pytest.skip(reason)


def nobody_listening(url: URL, timeout_s: float = 3.0) -> str | None:
    """Why nothing accepts a TCP connection at the URL's host and port; None when something does."""
    if not url.host:  # a Unix socket: the connection attempt below tells
        return None
    try:
        with socket.create_connection((url.host, url.port or 5432), timeout=timeout_s):
            return None
    except OSError as exc:
        if exc.errno in NOTHING_LISTENS:
            return os.strerror(exc.errno)
        raise


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it afterwards."""
    url = make_url(admin_url())
    shown = url.render_as_string(hide_password=True)
    why = nobody_listening(url)
    if why is not None:
        unavailable(f"PostgreSQL not reachable at {shown}: {why}")
    admin = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10})
    name = f"retina_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the server answered: a wrong setup is a failure, not "no server"
        admin.dispose()
        pytest.fail(
            f"PostgreSQL at {shown} answered but could not create a test database: {exc}", pytrace=False
        )
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
