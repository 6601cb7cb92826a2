"""Subprocess body for the data-parallel tests: one rank under torchrun, or one plain process.

Under ``torchrun`` (RANK/WORLD_SIZE set) it joins a gloo process group and trains as its
rank; without, it is the single-process reference. Rank 0 (or the single process) writes
the history and the final weights to OUT.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from retina_core.models import create_model
from retina_core.storage import LocalObjectStore
from retina_core.training.distributed import DistributedContext
from retina_core.training.loop import fit, seed_everything
from tests.training.helpers import blob_split
from tests.training.test_distributed import SETTINGS

store_dir, out_file = Path(sys.argv[1]), Path(sys.argv[2])
hang_at = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
torch.set_num_threads(1)
if "RANK" in os.environ:
    dist.init_process_group("gloo")
ctx = DistributedContext.current()


def on_batch(epoch: int, batch: int) -> None:
    if hang_at is not None and [epoch, batch] == hang_at and (ctx is None or ctx.is_main):
        (out_file.parent / "hanging").write_text(str(os.getpid()))
        time.sleep(600)  # the test kills the whole group with SIGKILL here, mid-epoch


seed_everything(SETTINGS.seed)
result = fit(
    create_model("oct_cnn", architecture="test_convnext", image_size=32),
    blob_split(61, 32, 0),  # 61 = 3 x 16 + 13: the last step splits 7 / 6 over two ranks
    blob_split(32, 32, 1),
    SETTINGS,
    device=torch.device("cpu"),
    store=LocalObjectStore(store_dir),
    run_key="ddp",
    on_batch=on_batch,
    dist_ctx=ctx,
)
if ctx is None or ctx.is_main:
    state = result.model.state_dict()
    out_file.write_text(
        json.dumps(
            {
                "history": [vars(h) for h in result.history],
                "resumed_from": result.resumed_from,
                "weights": {k: v.double().flatten().tolist() for k, v in state.items()},
            }
        )
    )
if ctx is not None:
    dist.destroy_process_group()
