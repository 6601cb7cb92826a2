from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from retina_core.data.synthetic import SynthSpec
from retina_core.fusion.multitask_train import train_multitask_fusion
from retina_core.fusion.train import train_fusion
from retina_core.results import FusionReport, MultiTaskReport
from tests.fusion.world import World, build_world, copy_world

PAIRED = SynthSpec(fundus=200, oct=200, pairs=400, size=128, seed=0, complementary_fraction=0.0)
"""400 same-eye pairs plus APTOS/Kermany-style sets; the encoders train on the train split
of all of it at 64 px (about a minute on two busy cores).

Every diseased eye here shows its disease in both modalities (``complementary_fraction=0``):
the one-modality cases the generator makes by default are *mild* (grade 1 microaneurysms,
OCT severity <= 0.3), which 64-px encoders trained for ten epochs barely see, so at this
size they act as label noise and the gain's interval straddles zero (measured: +0.057
[-0.031, +0.149] with 600 pairs). With the default 35% at 1500 pairs the gain is +0.061
[+0.031, +0.091] (see the fusion report in the issue); that run takes ~5 minutes, too long
for the suite. Measured here: gain +0.051 [+0.010, +0.103] (seed 0), +0.019 [+0.003, +0.049]
(seed 1). What this test checks is the same claim on a cohort it can afford: two
same-eye views combine into a significantly better screen than either alone."""


SMALL = SynthSpec(fundus=0, oct=0, pairs=48, size=64, seed=0)
"""48 same-eye pairs at 64 px: a world built in seconds, for checks of *what* is computed (rows,
fields, agreement with the encoders themselves), never of how well."""


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Small tensors on a shared 2-core machine: one thread is several times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def paired_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("paired"), PAIRED)


@pytest.fixture(scope="session")
def paired_report(paired_world: World) -> FusionReport:
    return train_fusion(paired_world.settings, paired_world.engine, paired_world.store)


@pytest.fixture
def own_world(paired_world: World, paired_report: FusionReport, tmp_path: Path) -> World:
    """A private copy of the paired world, its first fusion version included, for tests that
    register or promote versions: the shared world's champion stays the one ``paired_report`` made."""
    return copy_world(paired_world, tmp_path)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("small"), SMALL, epochs=8)


@pytest.fixture(scope="session")
def small_multitask(small_world: World) -> MultiTaskReport:
    """The multi-task head registered on the small world (its first and so champion version)."""
    return train_multitask_fusion(small_world.settings, small_world.engine, small_world.store)
