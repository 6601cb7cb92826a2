"""Prefect runtime defaults for this project's entry points (CLI, demo, tests).

Measured with Prefect 3.9 on a 2-core machine: the ephemeral API's first start
migrates a fresh database for ~20 s, past Prefect's 20 s default timeout; the flow
heartbeat costs ~1 s per flow; analytics fail noisily offline; the client's own telemetry
(separate from the server's analytics) prints a banner on the first interactive run, which
a tool for clinics should neither show nor send. These are defaults only: anything the
user set in the environment wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.3",
}


def prefect_environment(home: Path) -> None:
    """Set defaults before Prefect is imported; PREFECT_HOME lives under RETINA_HOME."""
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


@contextmanager
def fast_flows() -> Iterator[None]:
    """Switch the per-flow heartbeat off (the env var cannot express None)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
