"""A small but complete catalog for fusion tests: synthetic data ingested, both encoders trained.

Everything goes through the real pipeline (synthetic writer → ingestion → ``train_modality``
→ registry); only the sizes are shrunk so a session builds it in well under a minute on
two CPU cores. The encoders are tiny timm test models trained for a few epochs at 64 px:
weak, but their embeddings carry each modality's own disease signal, which is all the
fusion logic needs to be checked honestly.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import torch
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from retina_core import verbs
from retina_core.catalog.registry import ModelVersion, register_version
from retina_core.config import Settings
from retina_core.data.synthetic import SynthSpec, SynthSummary, write_synthetic
from retina_core.domain import Modality, Source
from retina_core.models import create_model
from retina_core.models.architectures import model_for_modality
from retina_core.models.persist import model_files
from retina_core.storage import ObjectStore
from retina_core.training.run import train_modality


@dataclass
class World:
    settings: Settings
    engine: Engine
    store: ObjectStore
    synth: SynthSummary
    out: Path


def world_settings(home: Path, *, test_fraction: float = 0.2, **fusion: object) -> Settings:
    encoder = {
        "image_size": 64,
        "epochs": 10,
        # The product's fundus recipe (batch 16, lr 2e-3): twice the steps per epoch. Measured on
        # PAIRED with batch 32 / lr 3e-3: the fusion gain's interval touched zero for one seed of two.
        "batch_size": 16,
        "lr": 2e-3,
        "warmup_epochs": 0.5,
        "patience": 4,
        "imbalance": "none",
    }
    return Settings.model_validate(
        {
            "home": home,
            "split": {"test_fraction": test_fraction},
            "train": {
                # Ben Graham's normalisation makes small lesions stand out enough to learn in a few epochs.
                "fundus": {"architecture": "test_resnet", "ben_graham": True, **encoder},
                "oct": {"architecture": "test_resnet", **encoder},
                "device": "cpu",
                "num_workers": 0,
            },
            "embed": {"batch_size": 128, "shard_size": 64},
            "fusion": {"epochs": 60, "hidden": 64, **fusion},
            "evaluation": {"bootstrap": 200},
        }
    )


def build_world(
    root: Path, spec: SynthSpec, *, train: bool = True, test_fraction: float = 0.2, **fusion: object
) -> World:
    out = root / "synth"
    synth = write_synthetic(out, spec)
    settings = world_settings(root / "home", test_fraction=test_fraction, **fusion)
    engine, store = verbs.catalog_engine(settings), verbs.curated_store(settings)
    if spec.fundus:
        verbs.ingest(settings, Source.APTOS, str(out / "aptos"))
    if spec.oct:
        verbs.ingest(settings, Source.KERMANY, str(out / "kermany"))
    if spec.pairs:
        verbs.ingest(settings, Source.PAIRS, str(out / "pairs.csv"))
    if train:
        for modality in Modality:
            train_modality(settings, modality, engine=engine, store=store)
    return World(settings, engine, store, synth, out)


def copy_world(world: World, root: Path) -> World:
    """The same catalog, store and registry under ``root``: a world one test may change.

    Tests that register or promote versions run on a copy, so what they leave behind never
    reaches the tests that read the shared world's champion, whatever order they run in.
    The catalog is copied with SQLite's backup API (a consistent snapshot, WAL included).
    """
    catalog = make_url(str(world.settings.database_url)).database
    assert catalog, "copy_world copies SQLite catalogs only"
    home = root / "home"
    shutil.copytree(world.settings.home, home, ignore=shutil.ignore_patterns(Path(catalog).name + "*"))
    data = world.settings.model_dump() | {"home": home, "storage_url": None, "database_url": None}
    settings = Settings.model_validate(data)
    target = make_url(str(settings.database_url)).database
    assert target
    with closing(sqlite3.connect(catalog)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
    return World(
        settings, verbs.catalog_engine(settings), verbs.curated_store(settings), world.synth, world.out
    )


def register_stand_in(world: World, modality: Modality, seed: int) -> ModelVersion:
    """A registered encoder that was never trained: seeded random weights, the real spec and files.

    For tests of the cache and the flows, where what the embeddings mean does not matter,
    only that they come from a registered encoder through the real path.
    """
    ms = world.settings.train_for(modality)
    torch.manual_seed(seed)
    options = {"ben_graham": ms.ben_graham} if modality is Modality.FUNDUS else {}  # as train_modality does
    model = create_model(
        model_for_modality(modality), architecture=ms.architecture, image_size=ms.image_size, **options
    )
    files = model_files(model, model.spec.to_dict(), {"train": ms.model_dump()}, {"stand_in": True})
    return register_version(
        world.engine,
        world.store,
        name=model_for_modality(modality),
        key=f"stand-in-{modality.value}-{seed}",
        files=files,
        primary_metric="stand_in",
        primary=(None, None, None),
        data_version=None,
    )
