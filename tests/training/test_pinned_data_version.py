"""A training pinned to a dataset version, and reading back what a training registered.

What a dispatching pipeline relies on: both encoders train on the version it pinned even
when an ingestion lands meanwhile, and it finds the versions its child runs registered
from the catalog by the run key the same settings give, never from a returned object.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from retina_core import verbs
from retina_core.catalog.registry import latest_decision
from retina_core.catalog.repository import image_records, latest_dataset_version
from retina_core.data.synthetic import SynthSpec, write_synthetic
from retina_core.domain import Modality, Source
from retina_core.training.run import NotEnoughData, NotTrainedHere
from tests.fusion.world import build_world


def test_a_pinned_training_ignores_later_images_and_is_found_by_its_run_key(tmp_path: Path) -> None:
    world = build_world(tmp_path, SynthSpec(fundus=40, oct=0, pairs=0, size=64, seed=2), train=False)
    settings = world.settings
    settings.train.fundus.epochs, settings.train.fundus.image_size = 1, 32
    first_version = latest_dataset_version(world.engine)
    assert first_version is not None
    before = len(image_records(world.engine, Modality.FUNDUS))

    write_synthetic(tmp_path / "later", SynthSpec(fundus=24, oct=0, pairs=0, size=64, seed=9))
    assert verbs.ingest(settings, Source.APTOS, str(tmp_path / "later" / "aptos")).accepted > 0
    assert latest_dataset_version(world.engine) == first_version + 1
    assert len(image_records(world.engine, Modality.FUNDUS)) > before
    assert len(image_records(world.engine, Modality.FUNDUS, up_to=first_version)) == before

    settings.train.data_version = first_version
    trained = verbs.train(settings, Modality.FUNDUS)
    assert trained.data_version == first_version
    assert sum(trained.counts.values()) == before  # none of the later images

    found = verbs.registered_training(settings, Modality.FUNDUS)
    assert (found.model_name, found.version, found.run_key) == (
        trained.model_name,
        trained.version,
        trained.run_key,
    )
    assert found.evaluation == trained.evaluation and found.counts == trained.counts
    assert found.history == trained.history and found.best_epoch == trained.best_epoch
    assert found.decision == trained.decision == latest_decision(world.engine, "fundus_cnn", trained.version)
    assert found.status == "champion"

    settings.train.data_version = None  # the latest version: other inputs, so another run key
    with pytest.raises(NotTrainedHere, match="no fundus_cnn version has run key"):
        verbs.registered_training(settings, Modality.FUNDUS)

    settings.train.data_version = first_version + 5
    with pytest.raises(NotEnoughData, match=f"dataset version {first_version + 5} does not exist"):
        verbs.train(settings, Modality.FUNDUS)
