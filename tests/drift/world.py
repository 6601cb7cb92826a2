"""A catalog with trained champions, then unshifted and shifted batches landing after them.

Everything goes through the real path (synthetic writer → ingestion → ``train_modality`` →
registry, champion rule); sizes are shrunk to tiny images and one epoch, because what the
drift check needs from the champions is a real encoder, embeddings and a registered figure,
not a good model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from retina_core import verbs
from retina_core.catalog.repository import latest_dataset_version
from retina_core.config import Settings
from retina_core.data.synthetic import CameraShift, Shift, SynthSpec, write_synthetic
from retina_core.domain import Modality, Source
from retina_core.storage import ObjectStore
from retina_core.training.run import train_modality

SIZE = 48
ANOTHER_CAMERA = Shift(
    camera=CameraShift(brightness=1.35, blur_sigma=1.2, field_scale=0.8),
    fundus_grade_weights=(0.1, 0.1, 0.2, 0.3, 0.3),
    oct_class_weights=(0.4, 0.4, 0.1, 0.1),
)


@dataclass
class DriftWorld:
    settings: Settings
    engine: Engine
    store: ObjectStore
    root: Path
    trained_version: int
    unshifted_version: int | None = None
    shifted_version: int | None = None


def drift_settings(home: Path) -> Settings:
    tiny = {"architecture": "test_resnet", "image_size": 32, "epochs": 1, "batch_size": 16, "patience": 1}
    return Settings.model_validate(
        {
            "home": home,
            "train": {
                "fundus": {**tiny, "ben_graham": False},
                "oct": tiny,
                "device": "cpu",
                "num_workers": 0,
            },
            "embed": {"batch_size": 64, "shard_size": 64},
            "evaluation": {"bootstrap": 100},
            "drift": {"permutations": 499, "max_samples": 200},
        }
    )


def land(world: DriftWorld, name: str, spec: SynthSpec) -> int:
    """Write and ingest one batch of fundus photos and OCT scans; returns the new dataset version."""
    out = world.root / name
    write_synthetic(out, spec)
    verbs.ingest(world.settings, Source.APTOS, str(out / "aptos"))
    verbs.ingest(world.settings, Source.KERMANY, str(out / "kermany"))
    version = latest_dataset_version(world.engine)
    assert version is not None
    return version


def build_trained(root: Path) -> DriftWorld:
    settings = drift_settings(root / "home")
    engine, store = verbs.catalog_engine(settings), verbs.curated_store(settings)
    world = DriftWorld(settings, engine, store, root, trained_version=0)
    world.trained_version = land(world, "train", SynthSpec(fundus=120, oct=120, size=SIZE, seed=1))
    for modality in Modality:
        train_modality(settings, modality, engine=engine, store=store)
    return world
