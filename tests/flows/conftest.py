from __future__ import annotations

from collections.abc import Iterator

import pytest

import tests.support.prefect  # noqa: F401  (sets the Prefect environment first)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Prefect's ephemeral API with the per-flow heartbeat off (it costs ~1 s per flow)."""
    from flows.runtime import fast_flows

    with fast_flows():
        yield
