"""Engine, sessions and schema migrations.

SQLite is the embedded default; PostgreSQL the production database. The schema is only
ever created by Alembic migrations (never ``create_all``) so an existing catalog can
be upgraded in place when the schema grows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    """An engine tuned for concurrent writers: WAL + busy timeout on SQLite."""
    if url.startswith("sqlite"):
        path = make_url(url).database  # unescaped: "%25" in the URL is "%" in the file name
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _alembic_config() -> Config:
    """Alembic's config without a URL: migrations run on the connection ``migrate`` hands
    over. Its ini options go through configparser interpolation, which chokes on the ``%``
    of an escaped password (``p%40ss``) and then prints the URL, password included."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def migrate(engine: Engine) -> None:
    """Upgrade the catalog to the newest schema; safe when another process races us."""
    head = head_revision()
    if current_revision(engine) == head:
        return
    cfg = _alembic_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except Exception:
        # A concurrent process may have applied the same migration first.
        if current_revision(engine) != head:
            raise
        log.info("catalog migrated concurrently by another process")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    factory = sessionmaker(engine, expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def upsert(session: Session, table: Any) -> Any:
    """An INSERT that understands ``ON CONFLICT DO NOTHING`` on this session's dialect.

    The catalog's writers rely on it so that re-runs and racing writers never duplicate a
    row; SQLite and PostgreSQL spell it with different insert constructs.
    """
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
