"""Prefect's runtime defaults for this project's entry points: quiet, and the user's choice wins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = """
from pathlib import Path
import sys
from flows.runtime import prefect_environment
prefect_environment(Path(sys.argv[1]))
from prefect._internal.analytics.enabled import is_telemetry_enabled
print(is_telemetry_enabled())
"""


def telemetry_enabled(tmp_path: Path, **env: str) -> str:
    """``is_telemetry_enabled()`` in a fresh interpreter, outside any CI environment."""
    base = {k: v for k, v in os.environ.items() if k != "DO_NOT_TRACK" and not k.startswith("PREFECT_")}
    base = {k: v for k, v in base.items() if k not in {"CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE"}}
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path)],
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.strip()


def test_client_telemetry_is_off_by_default_and_the_users_setting_wins(tmp_path: Path) -> None:
    assert telemetry_enabled(tmp_path) == "False"  # so no "Prefect collects anonymous usage data" banner
    assert telemetry_enabled(tmp_path, DO_NOT_TRACK="0") == "True"
