"""Data-parallel training (``torch.distributed`` + ``DistributedDataParallel``) for the loop.

The loop stays one loop: :func:`retina_core.training.loop.fit` takes an optional
:class:`DistributedContext` and calls the small hooks below. The design goal is that N
processes with a global batch of B compute what one process with batch B computes:

- **One global order, sharded per step.** Every rank draws the same seeded epoch order
  (shuffle or weighted sampling), cuts it into global batches of B and takes its
  ``np.array_split`` share of each. The union of the shards of a step *is* the
  single-process batch (a ``DistributedSampler`` that strides over the whole epoch would
  give each step a different set of images than a single process would see).
- **Exact gradient average.** DDP averages gradients over ranks; each rank scales its
  mean loss by ``world * local_n / global_n`` so the average equals the mean over the
  global batch even when the last batch splits unevenly. (Exact for the unweighted mean
  losses; the class-weighted cross-entropy normalises by the weights of its own shard.)
- **Augmentation keyed by image, not by process** (see ``ArrayDataset.augment_seed``).
- **Rank 0 alone** validates, keeps the best weights, writes checkpoints (then a barrier,
  so a resume sees the same checkpoint on every rank), evaluates on the test split and
  registers. Validation figures are broadcast so early stopping agrees on every rank.

BatchNorm is per-process (``SyncBatchNorm`` on CUDA keeps it global): on CPU, where gloo
runs the tests, only BatchNorm-free architectures reproduce a single process exactly.

Launch: ``torchrun --nproc-per-node=G -m retina_cli.torchrun`` (the GPU pool's job
template does this). Rank 0 runs the Prefect flow run; the other ranks wait in
:func:`follow` for the training jobs rank 0 announces with :func:`announce`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel
from torch import nn
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the process group."""

    rank: int
    world_size: int
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls, local_rank: int = 0) -> DistributedContext | None:
        """The initialised process group of more than one process, else None (single process)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def device_for(ctx: DistributedContext, device: torch.device) -> torch.device:
    """One GPU per rank (by local rank); CPU ranks share the CPU."""
    return torch.device("cuda", ctx.local_rank) if device.type == "cuda" else device


def wrap_model(model: nn.Module, ctx: DistributedContext, device: torch.device) -> nn.Module:
    """DDP around ``model``; BatchNorm becomes SyncBatchNorm on CUDA (gloo/CPU cannot sync it)."""
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[ctx.local_rank])
    return DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def rank_batches(
    order: Sequence[int], batch_size: int, ctx: DistributedContext | None
) -> tuple[list[list[int]], list[int]]:
    """This rank's index lists per step, and the global batch size of each step.

    A last global batch smaller than the world size is dropped under DDP (every rank must
    take part in every step's all-reduce): at most ``world - 1`` images of one epoch.
    """
    order = [int(i) for i in order]
    globals_ = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if ctx is None:
        return globals_, [len(b) for b in globals_]
    kept = [b for b in globals_ if len(b) >= ctx.world_size]
    shards = [[int(i) for i in np.array_split(np.asarray(b), ctx.world_size)[ctx.rank]] for b in kept]
    return shards, [len(b) for b in kept]


def loss_weight(ctx: DistributedContext | None, local_n: int, global_n: int) -> float:
    """Factor on the local mean loss so DDP's gradient average is the global-batch mean."""
    return 1.0 if ctx is None else ctx.world_size * local_n / global_n


def all_reduce_sum(ctx: DistributedContext | None, values: Sequence[float]) -> list[float]:
    """Sums of ``values`` over ranks (float64 on CPU: gloo reduces any device's tensors)."""
    if ctx is None:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_main(ctx: DistributedContext | None, values: list[Any]) -> list[Any]:
    """Rank 0's ``values`` on every rank (the other ranks pass placeholders of the same length)."""
    if ctx is None:
        return values
    box = list(values)
    dist.broadcast_object_list(box, src=0)
    return box


def barrier(ctx: DistributedContext | None) -> None:
    if ctx is not None:
        dist.barrier()


class TrainJob(BaseModel):
    """What rank 0 tells the other ranks to train: no connection settings, only the work.

    Each rank reads the training images from the preprocessed cache in the object store it
    reaches through its own environment; only their SHA-256s and labels travel.
    """

    modality: str
    model_name: str
    model_kwargs: dict[str, Any]
    train_settings: dict[str, Any]
    shas: list[str]
    labels: list[int]
    run_key: str
    data_version: int | None
    amp: bool
    num_workers: int | None
    device: str


def announce(ctx: DistributedContext | None, job: TrainJob | None) -> None:
    """Rank 0: hand ``job`` to the waiting ranks (None tells them to exit)."""
    if ctx is not None and ctx.is_main:
        from_main(ctx, [None if job is None else job.model_dump_json()])


def follow(ctx: DistributedContext, run_job: Callable[[TrainJob], None]) -> int:
    """Ranks > 0: run each announced job until rank 0 says stop; returns the jobs run."""
    done = 0
    while True:
        (payload,) = from_main(ctx, [None])
        if payload is None:
            return done
        job = TrainJob.model_validate_json(payload)
        log.info("rank %d: training %s (%s)", ctx.rank, job.model_name, job.run_key[:12])
        run_job(job)
        done += 1
