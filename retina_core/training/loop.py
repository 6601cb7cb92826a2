"""The training loop for one single-modality classifier.

Deterministic by construction: every epoch re-seeds torch, numpy, Python, the sampler
and the augmentation pipeline from (seed, epoch), so a run resumed from the checkpoint
of epoch k replays epochs k+1… exactly as an uninterrupted run would (on CPU the
results are bit-identical; on GPU, up to cuDNN non-determinism). A checkpoint holds
model, optimiser, scheduler, AMP scaler, RNG states, history and the best weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from retina_core.config import ModalityTrainSettings
from retina_core.data.datasets import ArrayDataset
from retina_core.data.transforms import build_train_transform
from retina_core.domain import Modality
from retina_core.evaluation.metrics import macro_f1, quadratic_weighted_kappa
from retina_core.evaluation.thresholds import apply_thresholds
from retina_core.models.classifier import RetinaClassifier
from retina_core.models.device import autocast_dtype, loader_kwargs, seed_everything
from retina_core.models.inference import predict_logits
from retina_core.storage import ObjectStore
from retina_core.training import checkpoint as ckpt
from retina_core.training import distributed as ddp
from retina_core.training.schedule import lr_factor

log = logging.getLogger(__name__)
DEFAULT_THRESHOLDS = np.array([0.5, 1.5, 2.5, 3.5])


@dataclass
class SplitArrays:
    images: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray
    shas: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    val_metric: float
    lr: float
    seconds: float
    images_per_second: float


@dataclass
class FitResult:
    model: RetinaClassifier
    history: list[EpochLog]
    best_epoch: int
    best_metric: float
    resumed_from: int | None
    stopped_early: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


EpochCallback = Callable[[EpochLog, int], None]
BatchCallback = Callable[[int, int], None]


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _loss_fn(settings: ModalityTrainSettings, labels: np.ndarray, num_classes: int, task: str) -> nn.Module:
    if task == "regression":
        return nn.SmoothL1Loss()
    if settings.imbalance == "class_weighted_loss":
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        weights = counts.sum() / np.maximum(counts, 1) / num_classes
        return nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    return nn.CrossEntropyLoss()


def epoch_order(settings: ModalityTrainSettings, labels: np.ndarray, seed: int) -> list[int]:
    """The epoch's image order, a function of (labels, seed) only: class-balanced draws with
    replacement for ``weighted_sampler``, else a permutation. Every data-parallel rank draws
    the same order and takes its share of each step (:func:`ddp.rank_batches`)."""
    gen = torch.Generator().manual_seed(seed)
    if settings.imbalance != "weighted_sampler":
        return torch.randperm(len(labels), generator=gen).tolist()
    weights = 1.0 / np.bincount(labels)[labels]
    return torch.multinomial(
        torch.as_tensor(weights, dtype=torch.double), len(labels), True, generator=gen
    ).tolist()


def _targets(y: torch.Tensor, task: str) -> torch.Tensor:
    return y.float() if task == "regression" else y


def _outputs(logits: torch.Tensor, task: str) -> torch.Tensor:
    return logits.squeeze(-1).float() if task == "regression" else logits.float()


def _validate(
    model: RetinaClassifier,
    val: SplitArrays,
    loss_fn: nn.Module,
    settings: ModalityTrainSettings,
    device: torch.device,
    amp: bool,
    num_workers: int | None,
) -> list[float]:
    """Validation loss and metric (the early-stopping signal) of the unwrapped model."""
    task = model.spec.task
    logits = predict_logits(
        model, val.images, device, batch_size=settings.batch_size * 2, amp=amp, num_workers=num_workers
    )
    with torch.no_grad():
        out = _outputs(torch.from_numpy(logits), task).to(device)
        loss = float(loss_fn(out, _targets(torch.from_numpy(val.labels), task).to(device)))
    return [loss, validation_metric(model, logits, val.labels)]


def validation_metric_name(modality: Modality) -> str:
    """What :func:`validation_metric` measures for ``modality``, as progress displays label it."""
    return "QWK" if modality is Modality.FUNDUS else "macro-F1"


def validation_metric(model: RetinaClassifier, logits: np.ndarray, labels: np.ndarray) -> float:
    """QWK for the ordinal DR grade, macro-F1 for OCT classes (the early-stopping signal)."""
    spec = model.spec
    if spec.task == "regression":
        pred = apply_thresholds(logits[:, 0], DEFAULT_THRESHOLDS)
    else:
        pred = logits.argmax(axis=1)
    k = len(spec.label_names)
    if spec.modality is Modality.FUNDUS:
        value = quadratic_weighted_kappa(labels, pred, k)
    else:
        value = macro_f1(labels, pred, k)
    return float(np.nan_to_num(value, nan=-1.0))


def fit(
    model: RetinaClassifier,
    train: SplitArrays,
    val: SplitArrays,
    settings: ModalityTrainSettings,
    *,
    device: torch.device,
    store: ObjectStore,
    run_key: str,
    amp: bool = True,
    num_workers: int | None = None,
    data_version: int | None = None,
    on_epoch: EpochCallback | None = None,
    on_batch: BatchCallback | None = None,
    dist_ctx: ddp.DistributedContext | None = None,
) -> FitResult:
    """Train ``model``; with ``dist_ctx`` as one rank of a data-parallel group (see ``distributed``)."""
    task = model.spec.task
    num_classes = len(model.spec.label_names)
    is_main = dist_ctx is None or dist_ctx.is_main
    if dist_ctx is not None:
        device = ddp.device_for(dist_ctx, device)
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    core = model
    net = model if dist_ctx is None else ddp.wrap_model(model, dist_ctx, device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, -(-len(train) // settings.batch_size))
    total, warmup = settings.epochs * steps_per_epoch, int(settings.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
    dtype = autocast_dtype(device, amp)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    loss_fn = _loss_fn(settings, train.labels, num_classes, task).to(device)
    transform = build_train_transform(model.spec)
    dataset = ArrayDataset(train.images, train.labels, transform)

    history: list[EpochLog] = []
    best_metric, best_epoch, best_state = -np.inf, -1, None
    start_epoch, resumed_from = 0, None
    state = ckpt.load_latest(store, run_key)
    if state is not None:
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        ckpt.restore_rng_state(state["rng"])
        history = [EpochLog(**h) for h in state["history"]]
        best_metric, best_epoch, best_state = state["best_metric"], state["best_epoch"], state["best_model"]
        start_epoch = resumed_from = state["epoch"] + 1
        log.info("resuming %s from epoch %d", run_key, resumed_from)

    stopped_early = False
    for epoch in range(start_epoch, settings.epochs):
        if best_epoch >= 0 and epoch - best_epoch > settings.patience:
            stopped_early = True
            break
        seed = _epoch_seed(settings.seed, epoch)
        seed_everything(seed)
        dataset.augment_seed = seed
        batches, global_sizes = ddp.rank_batches(
            epoch_order(settings, train.labels, seed), settings.batch_size, dist_ctx
        )
        loader = DataLoader(dataset, batch_sampler=batches, **loader_kwargs(device, num_workers))
        net.train()
        started, seen, loss_sum = time.perf_counter(), 0, 0.0
        for batch, (x, y) in enumerate(loader):
            if on_batch is not None:
                on_batch(epoch, batch)
            x = x.to(device, non_blocking=True)
            y = _targets(y.to(device, non_blocking=True), task)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = _outputs(net(x), task)
            loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss * ddp.loss_weight(dist_ctx, len(x), global_sizes[batch])).backward()
            if settings.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(net.parameters(), settings.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(x)
            seen += len(x)
        train_seconds = time.perf_counter() - started
        loss_sum, seen_all = ddp.all_reduce_sum(dist_ctx, [loss_sum, seen])
        val_loss, metric = ddp.from_main(
            dist_ctx,
            _validate(core, val, loss_fn, settings, device, amp, num_workers) if is_main else [0.0, 0.0],
        )
        entry = EpochLog(
            epoch=epoch,
            train_loss=loss_sum / max(seen_all, 1),
            val_loss=val_loss,
            val_metric=metric,
            lr=optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - started,
            images_per_second=seen_all / max(train_seconds, 1e-9),
        )
        history.append(entry)
        if metric > best_metric:
            best_metric, best_epoch = metric, epoch
            if is_main:
                best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
        if not is_main:  # rank 0 alone writes; the barrier below makes every rank see it
            ddp.barrier(dist_ctx)
            continue
        ckpt.save_checkpoint(
            store,
            run_key,
            epoch,
            {
                "epoch": epoch,
                "model": core.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": ckpt.rng_state(),
                "history": [vars(h) for h in history],
                "best_metric": float(best_metric),
                "best_epoch": best_epoch,
                "best_model": best_state,
                "data_version": -1 if data_version is None else data_version,
            },
        )
        log.info(
            "epoch %d: train loss %.4f, val loss %.4f, val metric %.4f",
            epoch,
            entry.train_loss,
            val_loss,
            metric,
        )
        ddp.barrier(dist_ctx)
        if on_epoch is not None:
            on_epoch(entry, settings.epochs)
    if best_state is not None:
        core.load_state_dict(best_state)
    core.cpu()
    return FitResult(
        model=core,
        history=history,
        best_epoch=best_epoch,
        best_metric=float(best_metric),
        resumed_from=resumed_from,
        stopped_early=stopped_early,
    )
