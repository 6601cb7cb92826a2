"""A training run killed with SIGKILL mid-epoch resumes from its last checkpoint and ends
exactly where an uninterrupted run with the same seed ends (CPU: bit-identical; the
tolerance below is 1e-9, i.e. equality up to float printing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from retina_core.config import ModalityTrainSettings

SETTINGS = ModalityTrainSettings(
    architecture="resnet18",
    image_size=32,
    epochs=3,
    batch_size=16,
    lr=3e-3,
    warmup_epochs=0.5,
    patience=5,
    seed=7,
)
ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("resume_worker.py")


def run_worker(store: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(WORKER), str(store), str(out), *extra], cwd=ROOT, env=env)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    straight = run_worker(tmp_path / "a", tmp_path / "a.json")
    assert straight.wait(timeout=300) == 0

    killed = run_worker(tmp_path / "b", tmp_path / "b.json", json.dumps([1, 3]))
    hanging = tmp_path / "hanging"
    deadline = time.monotonic() + 300
    while not hanging.exists():
        assert killed.poll() is None, "worker exited before reaching the kill point"
        assert time.monotonic() < deadline, "worker never reached epoch 1, batch 3"
        time.sleep(0.2)
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints" / "resume").iterdir()) == ["epoch-000.pt"]

    resumed = run_worker(tmp_path / "b", tmp_path / "b.json")
    assert resumed.wait(timeout=300) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert b["resumed_from"] == 1 and a["resumed_from"] is None
    assert len(a["history"]) == len(b["history"]) == 3
    for x, y in zip(a["history"], b["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_metric"):
            assert abs(x[key] - y[key]) <= 1e-9, (key, x, y)
    assert abs(a["weights_sum"] - b["weights_sum"]) <= 1e-9
