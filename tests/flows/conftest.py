from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import tests.support.prefect  # noqa: F401  (sets the Prefect environment first)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Prefect's ephemeral API with the per-flow heartbeat off (it costs ~1 s per flow)."""
    from flows.runtime import fast_flows

    with fast_flows():
        yield


def flow_run_artifacts(flow_run_id: object) -> dict[str, Any]:
    """The artifacts one flow run published, by key, read back through the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}
