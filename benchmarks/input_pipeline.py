"""Input pipeline: can the DataLoader feed the model faster than the model trains?

Baseline: the fundus model's train step (forward, loss, backward, AdamW) at the training
size on batches already in memory, i.e. the rate the model consumes images. Ours: the
DataLoader pass training runs (cached arrays decoded with ``load_many``, augmented,
collated) with the workers training configures. The target asks the input side to be
1.5× faster, so input is never what the model waits for.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.fixtures import BenchContext
from benchmarks.harness import BenchmarkResult, Budget, Side, Target, interleave
from benchmarks.preprocessing_cache import one_pass
from benchmarks.train_step import step_runner
from retina_core import verbs
from retina_core.catalog.repository import image_records
from retina_core.data.datasets import ArrayDataset
from retina_core.data.image_cache import PreprocessedCache, ensure_preprocessed
from retina_core.data.transforms import build_train_transform
from retina_core.domain import Modality
from retina_core.models import create_model
from retina_core.models.device import loader_kwargs, select_device
from retina_core.training.data import preprocessing_for

NAME = "input pipeline"
TARGET = Target("speedup", 1.5)


def run(ctx: BenchContext) -> BenchmarkResult:
    settings = ctx.originals
    ms = settings.train.fundus
    store = verbs.curated_store(settings)
    records = image_records(verbs.catalog_engine(settings), Modality.FUNDUS, labeled_only=False)
    cache = PreprocessedCache(store, preprocessing_for(Modality.FUNDUS, ms))
    ensure_preprocessed(cache, records)

    n_images = ctx.pick(2, 1) * ms.batch_size
    chosen = list(itertools.islice(itertools.cycle(records), n_images))
    shas = [r.sha256 for r in chosen]
    labels = np.array([max(r.label, 0) for r in chosen], dtype=np.int64)
    device = select_device(settings.train.device)
    model = create_model("fundus_cnn", architecture=ms.architecture, image_size=ms.image_size)
    transform = build_train_transform(model.spec)
    kwargs = loader_kwargs(device, settings.train.num_workers)
    batches = list(
        DataLoader(ArrayDataset(cache.load_many(shas), labels, transform), batch_size=ms.batch_size)
    )
    runner = step_runner(model, device, amp=settings.train.amp)

    def train_steps(_: object) -> None:
        for x, y in batches:
            runner.step(x, y)

    def loader_pass(_: object) -> int:
        return one_pass(
            ArrayDataset(cache.load_many(shas, workers=2), labels, transform), ms.batch_size, kwargs
        )

    budget = ctx.pick(Budget(3, 5, 40, warmup=1), Budget(2, 3, 20, warmup=1))
    torch.manual_seed(0)
    baseline, ours = interleave(
        Side(
            f"{ms.architecture} train steps at {ms.image_size} px, batch {ms.batch_size}, on {device.type} "
            "(batches already in memory)",
            train_steps,
            images=n_images,
        ),
        Side(
            f"DataLoader pass: cache load_many + augment + collate, {kwargs['num_workers']} workers",
            loader_pass,
            images=n_images,
        ),
        budget,
    )
    return BenchmarkResult(
        name=NAME,
        baseline=baseline,
        ours=ours,
        target=TARGET,
        warmup=budget.warmup,
        figures={"image_size": ms.image_size, "batch_size": ms.batch_size, "loader": dict(kwargs)},
        notes=[
            "Ratio = loader images/s over train-step images/s. The loader side also re-reads the "
            "cache every pass (training reads it once per run), so it is if anything understated. "
            f"With {kwargs['num_workers']} workers the loader shares the main process with the model.",
        ],
    )
