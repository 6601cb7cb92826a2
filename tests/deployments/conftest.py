"""Fixtures for the deployment and infrastructure files: parsed once, read-only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# deployments/ runs from the checkout (`python -m deployments.stack`) and is not an installed
# package; `python -m pytest` has the root on sys.path, the `pytest` script does not.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def prefect_spec() -> dict[str, Any]:
    """deployments/prefect.yaml as Prefect reads it (yaml.safe_load: anchors and `<<` resolved)."""
    return yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())


@pytest.fixture(scope="session")
def deployments_by_name(prefect_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in prefect_spec["deployments"]}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "infra" / "compose.yaml").read_text())
