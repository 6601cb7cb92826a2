from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import tests.support.prefect  # noqa: F401  (sets the Prefect environment first)
from retina_core.data.synthetic import SynthSpec
from tests.drift.world import ANOTHER_CAMERA, SIZE, DriftWorld, build_trained, land


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def drift_world(tmp_path_factory: pytest.TempPathFactory) -> DriftWorld:
    """Champions trained on seed 1; an unshifted batch (seed 2), then a shifted one (seed 3), land after."""
    world = build_trained(tmp_path_factory.mktemp("drift"))
    world.unshifted_version = land(world, "unshifted", SynthSpec(fundus=60, oct=60, size=SIZE, seed=2))
    world.shifted_version = land(
        world, "shifted", SynthSpec(fundus=60, oct=60, size=SIZE, seed=3, shift=ANOTHER_CAMERA)
    )
    return world


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Prefect's ephemeral API with the per-flow heartbeat off (it costs ~1 s per flow)."""
    from flows.runtime import fast_flows

    with fast_flows():
        yield
