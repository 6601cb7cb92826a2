"""`retina serve` builds the app from the settings and hands it to uvicorn with the given address."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from retina_cli.app import app
from tests.fusion.world import World


def test_serve_runs_the_app_on_the_given_host_and_port(
    serve_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("uvicorn.run", lambda application, **kw: seen.update(app=application, **kw))
    monkeypatch.setenv("RETINA_HOME", str(serve_world.settings.home))
    monkeypatch.setenv("RETINA_SERVE__TOKEN", "from-the-environment")
    result = CliRunner().invoke(app, ["serve", "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert isinstance(seen["app"], FastAPI) and seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert seen["app"].state.settings.serve.token.get_secret_value() == "from-the-environment"
    assert seen["app"].state.settings.home == serve_world.settings.home


def test_serve_has_help() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0 and "--host" in result.output and "--port" in result.output
