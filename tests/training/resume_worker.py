"""Subprocess body for the kill-and-resume test (run as a script, not collected by pytest)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from retina_core.models import create_model
from retina_core.models.device import seed_everything
from retina_core.storage import LocalObjectStore
from retina_core.training.loop import fit
from tests.training.helpers import blob_split
from tests.training.test_resume import SETTINGS

store_dir, out_file = Path(sys.argv[1]), Path(sys.argv[2])
hang_at = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
torch.set_num_threads(1)


def on_batch(epoch: int, batch: int) -> None:
    if hang_at is not None and [epoch, batch] == hang_at:
        (out_file.parent / "hanging").write_text(str(os.getpid()))
        time.sleep(600)  # the test kills us with SIGKILL here, mid-epoch


seed_everything(SETTINGS.seed)
result = fit(
    create_model("oct_cnn", image_size=32),
    blob_split(64, 32, 0),
    blob_split(32, 32, 1),
    SETTINGS,
    device=torch.device("cpu"),
    store=LocalObjectStore(store_dir),
    run_key="resume",
    on_batch=on_batch,
)
out_file.write_text(
    json.dumps(
        {
            "history": [vars(h) for h in result.history],
            "resumed_from": result.resumed_from,
            "weights_sum": float(sum(p.double().sum() for p in result.model.state_dict().values())),
        }
    )
)
