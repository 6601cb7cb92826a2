"""``torchrun -m retina_cli.torchrun``: one process per GPU for a flow run of the GPU pool.

The Kubernetes job template of ``retina-gpu`` starts every flow run this way with
``--nproc-per-node`` set to the pool's ``gpu_count``. Rank 0 executes the flow run exactly
as ``prefect flow-run execute`` would (``PREFECT__FLOW_RUN_ID`` from the worker); when it
trains a model with ``train.<modality>.distributed`` on, it announces the job and the
other ranks, waiting here, join the DistributedDataParallel loop. They build their own
connection settings from the pod's environment (the same Secret and ConfigMap as rank 0);
nothing but the training job travels between ranks. With one GPU this is one process.
"""

from __future__ import annotations

import os
import runpy
from collections.abc import Callable

import torch
import torch.distributed as dist

from retina_core import verbs
from retina_core.config import load_settings
from retina_core.training.distributed import DistributedContext, announce, follow
from retina_core.training.run import follow_job


def execute_flow_run() -> None:
    """What ``prefect flow-run execute`` does: run the flow run named by ``PREFECT__FLOW_RUN_ID``."""
    runpy.run_module("prefect.engine", run_name="__main__")


def main(lead: Callable[[], None] = execute_flow_run) -> None:
    """Rank 0 runs ``lead`` (the flow run); the other ranks follow its training jobs."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    ctx = DistributedContext.current(local_rank)
    try:
        if ctx is None or ctx.is_main:
            try:
                lead()
            finally:
                announce(ctx, None)  # releases the waiting ranks, whatever the flow run did
        else:
            store = verbs.curated_store(load_settings())
            follow(ctx, lambda job: follow_job(job, ctx, store))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
