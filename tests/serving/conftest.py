"""A tiny registered world (both encoders, a fusion head, the multi-task head) and the service over it.

Built through the real pipeline by :func:`tests.fusion.world.build_world` on 48 synthetic
same-eye pairs at 64 px: a few seconds on two cores. The models are weak; the service's
behaviour (fields, codes, versions, overlays) is what these tests check.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from benchmarks.serving import live_server
from retina_core.config import ServeSettings, Settings
from retina_core.data.synthetic import SynthSpec
from retina_core.fusion.multitask_train import train_multitask_fusion
from retina_core.fusion.train import train_fusion
from retina_core.serving import create_app
from tests.fusion.conftest import one_torch_thread  # noqa: F401  (autouse: one thread on 2 busy cores)
from tests.fusion.world import World, build_world

SERVE_DATA = SynthSpec(fundus=0, oct=0, pairs=48, size=64, seed=0)
MIN_SIDE = 32
"""The world's images are 64 px; the quality gate's default (224 px) would withhold them all."""


@dataclass
class Eye:
    fundus: bytes
    oct: bytes
    fundus_path: Path
    oct_path: Path


def make_world(root: Path) -> World:
    world = build_world(root, SERVE_DATA, epochs=8)
    train_fusion(world.settings, world.engine, world.store)
    train_multitask_fusion(world.settings, world.engine, world.store)  # its first version: the champion
    return world


def serve_settings(world: World, **serve: object) -> Settings:
    settings = world.settings.model_copy(deep=True)
    settings.serve = ServeSettings.model_validate(
        {**settings.serve.model_dump(), "min_side": MIN_SIDE, **serve}
    )
    return settings


def eyes(world: World, count: int) -> list[Eye]:
    with (world.out / "pairs.csv").open() as fh:
        rows = list(csv.DictReader(fh))[:count]
    found = []
    for row in rows:
        f, o = world.out / row["fundus_path"], world.out / row["oct_path"]
        found.append(Eye(f.read_bytes(), o.read_bytes(), f, o))
    return found


@pytest.fixture(scope="session")
def serve_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("serve-world"))


@pytest.fixture
def client(serve_world: World) -> Iterator[TestClient]:
    app = create_app(serve_settings(serve_world), serve_world.engine, serve_world.store)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def live_url(serve_world: World) -> Iterator[str]:
    """The app under a real uvicorn on a loopback port, as `retina serve` runs it."""
    with live_server(create_app(serve_settings(serve_world), serve_world.engine, serve_world.store)) as url:
        yield url
