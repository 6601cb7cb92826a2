"""tests.support.postgres: a skip means no server listens; anything else is a failure."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support.postgres import REQUIRED_ENV, admin_url, fresh_database


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def url_with(**parts: object) -> str:
    return make_url(admin_url()).set(**parts).render_as_string(hide_password=False)


def test_no_server_listening_is_a_skip_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETINA_TEST_POSTGRES_URL", url_with(host="127.0.0.1", port=closed_port()))
    monkeypatch.delenv(REQUIRED_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"not reachable .* refused"), fresh_database():
        pass


def test_no_server_listening_fails_where_postgres_is_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETINA_TEST_POSTGRES_URL", url_with(host="127.0.0.1", port=closed_port()))
    monkeypatch.setenv(REQUIRED_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=rf"not reachable.*{REQUIRED_ENV}"), fresh_database():
        pass


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("parts", "said"),
    [
        ({"password": "not-the-password"}, "password authentication failed"),
        ({"username": "nobody"}, "nobody"),
    ],
    ids=["wrong-password", "unknown-role"],
)
def test_a_server_that_refuses_the_credentials_is_a_failure(
    monkeypatch: pytest.MonkeyPatch, parts: dict[str, str], said: str
) -> None:
    with fresh_database():  # a server is here (else this skips, or fails where it is expected)
        pass
    monkeypatch.setenv("RETINA_TEST_POSTGRES_URL", url_with(**parts))
    monkeypatch.delenv(REQUIRED_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match=said) as failure, fresh_database():
        pass
    assert "not-the-password" not in str(failure.value)


@pytest.mark.postgres
def test_a_missing_database_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    with fresh_database() as url:
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        engine.dispose()
    monkeypatch.setenv("RETINA_TEST_POSTGRES_URL", url_with(database="retina_no_such_database"))
    monkeypatch.delenv(REQUIRED_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="retina_no_such_database"), fresh_database():
        pass
