"""Prefect for tests: the real ephemeral API, on a PREFECT_HOME reused across runs.

Importing this module sets the environment before Prefect reads its settings, so it
must be imported (by a conftest) before anything imports prefect.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".retina" / "prefect-test"))
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_API_URL", "")
if not os.environ["PREFECT_API_URL"]:
    del os.environ["PREFECT_API_URL"]

from flows.runtime import prefect_environment  # noqa: E402

prefect_environment(Path(os.environ["PREFECT_HOME"]).parent)
