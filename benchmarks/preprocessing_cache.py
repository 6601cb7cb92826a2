"""Preprocessing cache: one pass of the fundus training input pipeline, from originals vs from the cache.

Baseline: every image is decoded from its ~2000 px original, field-cropped and resized
(``preprocess``), then augmented and collated by a DataLoader, as training would have to
without the cache. Ours: the same pass as training runs it, ``load_many`` from the
preprocessed cache and then the same augmentation and collation. No model either side.
Both use the DataLoader settings training uses on this machine.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks.fixtures import BenchContext
from benchmarks.harness import BenchmarkResult, Budget, Side, Target, interleave
from retina_core import verbs
from retina_core.catalog.repository import image_records
from retina_core.data.datasets import ArrayDataset, Transform
from retina_core.data.image_cache import ensure_preprocessed
from retina_core.data.preprocess import Preprocessing, preprocess
from retina_core.data.transforms import build_train_transform
from retina_core.domain import Modality
from retina_core.models import create_model
from retina_core.models.device import loader_kwargs, select_device
from retina_core.models.inference import cache_for
from retina_core.storage import ObjectStore

NAME = "preprocessing cache"
TARGET = Target("speedup", 10.0)


class OriginalsDataset(Dataset[tuple[torch.Tensor, int]]):
    """The input pipeline without a cache: each access decodes, crops and resizes the original."""

    def __init__(
        self,
        store: ObjectStore,
        keys: list[str],
        labels: np.ndarray,
        how: Preprocessing,
        transform: Transform,
    ) -> None:
        self.store, self.keys, self.labels, self.how, self.transform = store, keys, labels, how, transform

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        array = preprocess(self.store.get_bytes(self.keys[index]), self.how)
        return self.transform(image=array)["image"], int(self.labels[index])


def one_pass(dataset: Dataset[tuple[torch.Tensor, int]], batch_size: int, kwargs: dict[str, Any]) -> int:
    """Iterate one epoch of collated batches; returns how many images came out."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, **kwargs)
    return sum(len(x) for x, _ in loader)


def run(ctx: BenchContext) -> BenchmarkResult:
    settings = ctx.originals
    ms = settings.train.fundus
    store = verbs.curated_store(settings)
    records = image_records(verbs.catalog_engine(settings), Modality.FUNDUS, labeled_only=False)
    labels = np.array([max(r.label, 0) for r in records], dtype=np.int64)
    spec = create_model(
        "fundus_cnn", architecture=ms.architecture, image_size=ms.image_size, ben_graham=ms.ben_graham
    ).spec
    transform = build_train_transform(spec)
    kwargs = loader_kwargs(select_device(settings.train.device), settings.train.num_workers)

    cache = cache_for(store, spec)
    started = time.perf_counter()
    stats = ensure_preprocessed(cache, records)
    fill_seconds = time.perf_counter() - started

    keys = [r.object_key for r in records]
    originals = OriginalsDataset(
        store, keys, labels, Preprocessing.for_modality(Modality.FUNDUS, ms.image_size), transform
    )
    shas = [r.sha256 for r in records]

    def from_cache(_: object) -> int:
        return one_pass(
            ArrayDataset(cache.load_many(shas, workers=2), labels, transform), ms.batch_size, kwargs
        )

    budget = ctx.pick(Budget(3, 5, 45, warmup=1), Budget(2, 3, 20, warmup=1))
    baseline, ours = interleave(
        Side(
            f"decode + field crop + resize + augment + collate from {len(records)} full-size PNG originals",
            lambda _: one_pass(originals, ms.batch_size, kwargs),
            images=len(records),
        ),
        Side(
            "load_many from the preprocessed cache + the same augment + collate",
            from_cache,
            images=len(records),
        ),
        budget,
    )
    sides = [longer_side(store.get_bytes(r.object_key)) for r in records]
    return BenchmarkResult(
        name=NAME,
        baseline=baseline,
        ours=ours,
        target=TARGET,
        warmup=budget.warmup,
        figures={
            "image_size": ms.image_size,
            "batch_size": ms.batch_size,
            "loader": dict(kwargs),
            "cache_fill_seconds": fill_seconds,
            "cache_fill_computed": stats.computed,
            "original_longer_side_px": {
                "min": min(sides),
                "median": int(np.median(sides)),
                "max": max(sides),
            },
        },
        notes=[
            f"Originals {_span(sides)} px on the longer side; {ms.image_size} px out, batch {ms.batch_size}, "
            f"DataLoader workers {kwargs['num_workers']} "
            f"(what training configures here). Filling the cache once ({stats.computed} computed) "
            f"took {fill_seconds:.1f} s: one-time, in neither side.",
        ],
    )


def _span(values: list[int]) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}–{max(values)}"


def longer_side(data: bytes) -> int:
    """From the header only: no decode."""
    with Image.open(io.BytesIO(data)) as image:
        return max(image.size)
