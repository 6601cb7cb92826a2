"""Turn the failures a person can act on into one line: the path (or database) and the problem.

A read-only or full disk, a home that is a file, an unreachable database: each would
otherwise end in a traceback from deep inside SQLite, Prefect or the object store. The
line never carries a password: database URLs are redacted and any password they held
is scrubbed from the message. ``retina -v`` keeps the traceback for bug reports.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from urllib.parse import quote, unquote

from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from retina_core.home import HomeUnusable
from retina_core.storage import StorageError

ACTIONABLE_ERRNOS = {
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENAMETOOLONG,
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def scrub(text: str, database_url: str | None) -> str:
    """``text`` without the database password, in any of the spellings a URL allows."""
    if not database_url:
        return text
    try:
        password = make_url(database_url).password
    except Exception:
        return text
    if password:
        for spelling in {str(password), quote(str(password), safe=""), unquote(str(password))}:
            if spelling:
                text = text.replace(spelling, "***")
    return text


def redacted(database_url: str | None) -> str:
    try:
        return make_url(database_url or "").render_as_string(hide_password=True)
    except Exception:
        return "the configured database"


def actionable(exc: BaseException, database_url: str | None = None) -> str | None:
    """One line for a failure the user can fix, or None for a bug (which keeps its traceback)."""
    dispatch = sys.modules.get("flows.dispatch")  # loaded only where a flow dispatched (it imports Prefect)
    settings_errors = (HomeUnusable, dispatch.DeploymentMissing) if dispatch else (HomeUnusable,)
    for err in _chain(exc):
        if isinstance(err, settings_errors):
            return str(err)
        if isinstance(err, OperationalError | InterfaceError):  # unreachable, refused, full, read-only
            detail = str(err.orig).strip() if err.orig is not None else ""
            first = detail.splitlines()[0] if detail else type(err.orig or err).__name__
            return scrub(f"catalog database {redacted(database_url)}: {first}", database_url)
        if isinstance(err, StorageError) and any(
            isinstance(e, OSError) and e.errno in ACTIONABLE_ERRNOS for e in _chain(err)
        ):
            return scrub(str(err), database_url)
        if isinstance(err, OSError) and err.errno in ACTIONABLE_ERRNOS:
            where = err.filename if err.filename is not None else "a file"
            return scrub(f"{where}: {err.strerror or err}", database_url)
    return None
