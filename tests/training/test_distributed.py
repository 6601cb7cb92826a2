"""Data-parallel training (gloo, 2 CPU processes under torchrun) against one process.

Two ranks with a global batch of 16 (8 each) must train what one process with batch 16
trains: the same images per step (one global order, sharded per step), the same
augmentation per image, and a gradient average equal to the global-batch mean. What may
differ is float32 summation order (the all-reduce adds two half-batch gradients instead
of one full-batch sum: ~1e-7 relative per step), which eight AdamW steps carry into the
weights at well under 1e-4 absolute: the tolerances below sit between that and a real
fault (a rank seeing different images, or a mean of means, moves weights by ~1e-2).
Kill-and-resume under DDP replays the same arithmetic, so it is held to 1e-9.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from retina_core.config import ModalityTrainSettings

SETTINGS = ModalityTrainSettings(
    architecture="test_convnext",  # LayerNorm, no BatchNorm: per-rank batch statistics would differ
    image_size=32,
    epochs=2,
    batch_size=16,
    lr=3e-3,
    warmup_epochs=0.5,
    patience=5,
    seed=7,
)
ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")


def launch(store: Path, out: Path, *extra: str, ranks: int = 2) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    cmd = [*runner, str(WORKER)] if ranks > 1 else [sys.executable, str(WORKER)]
    return subprocess.Popen([*cmd, str(store), str(out), *extra], cwd=ROOT, env=env, start_new_session=True)


def finished(proc: subprocess.Popen, out: Path) -> dict:
    assert proc.wait(timeout=300) == 0
    return json.loads(out.read_text())


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def max_weight_gap(a: dict, b: dict) -> float:
    assert a["weights"].keys() == b["weights"].keys()
    return max(float(np.max(np.abs(np.subtract(a["weights"][k], b["weights"][k])))) for k in a["weights"])


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("ddp")
    return finished(launch(tmp / "store", tmp / "out.json"), tmp / "out.json")


def test_two_ranks_train_what_one_process_trains(tmp_path: Path, two_ranks: dict) -> None:
    single = finished(launch(tmp_path / "store", tmp_path / "one.json", ranks=1), tmp_path / "one.json")
    assert len(single["history"]) == len(two_ranks["history"]) == 2
    for one, two in zip(single["history"], two_ranks["history"], strict=True):
        assert one["train_loss"] == pytest.approx(two["train_loss"], rel=1e-4)
        assert one["val_loss"] == pytest.approx(two["val_loss"], rel=1e-4)
    assert single["history"][0]["train_loss"] != pytest.approx(single["history"][1]["train_loss"], rel=1e-3)
    gap = max_weight_gap(single, two_ranks)
    print("max weight gap", gap)
    assert gap < 1e-4


def test_killed_ranks_resume_to_the_uninterrupted_result(tmp_path: Path, two_ranks: dict) -> None:
    store, out = tmp_path / "store", tmp_path / "out.json"
    killed = launch(store, out, json.dumps([1, 2]))
    deadline = time.monotonic() + 300
    while not (tmp_path / "hanging").exists():
        assert killed.poll() is None, "the ranks exited before reaching the kill point"
        assert time.monotonic() < deadline, "rank 0 never reached epoch 1, batch 2"
        time.sleep(0.2)
    # torchrun and both ranks, mid-epoch. The ranks run in their own sessions, so killing
    # torchrun's group alone would leave them behind, rank 0 hanging at the kill point.
    family = [killed.pid, *(p.pid for p in psutil.Process(killed.pid).children(recursive=True))]
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    killed.wait(timeout=30)
    _, alive = psutil.wait_procs([p for p in map(_process, family[1:]) if p is not None], timeout=30)
    assert not alive, f"ranks survived the kill: {alive}"
    assert sorted(p.name for p in (store / "checkpoints" / "ddp").iterdir()) == ["epoch-000.pt"]

    resumed = finished(launch(store, out), out)
    assert resumed["resumed_from"] == 1 and two_ranks["resumed_from"] is None
    for x, y in zip(resumed["history"], two_ranks["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_metric"):
            assert abs(x[key] - y[key]) <= 1e-9, (key, x, y)
    assert max_weight_gap(resumed, two_ranks) <= 1e-9


def test_each_step_shards_the_single_process_batch() -> None:
    from retina_core.training.distributed import DistributedContext, rank_batches

    order = list(range(37))[::-1]
    single, sizes = rank_batches(order, 16, None)
    shards = [rank_batches(order, 16, DistributedContext(rank=r, world_size=3))[0] for r in range(3)]
    assert sizes == [16, 16, 5]
    for step, batch in enumerate(single):
        assert [i for shard in shards for i in shard[step]] == batch
    assert [len(s[2]) for s in shards] == [2, 2, 1]
    # a last batch smaller than the world is dropped: every rank must take part in each step
    assert rank_batches(order[:33], 16, DistributedContext(rank=0, world_size=3))[1] == [16, 16]


def test_training_verb_under_torchrun_registers_once_with_the_follower_in_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path a GPU Job takes: rank 0 trains through the verb and registers; rank 1 joins
    through ``retina_cli.torchrun`` (DDP would hang without it) and writes nothing."""
    from retina_core import verbs
    from retina_core.catalog.registry import list_versions
    from retina_core.config import load_settings
    from retina_core.data.synthetic import SynthSpec, write_synthetic
    from retina_core.domain import Source

    env = {
        "RETINA_HOME": str(tmp_path / "home"),
        "RETINA_TRAIN__DEVICE": "cpu",
        "RETINA_TRAIN__NUM_WORKERS": "0",
        "RETINA_TRAIN__OCT__ARCHITECTURE": "test_convnext",
        "RETINA_TRAIN__OCT__IMAGE_SIZE": "32",
        "RETINA_TRAIN__OCT__EPOCHS": "2",
        "RETINA_TRAIN__OCT__BATCH_SIZE": "8",
        "RETINA_TRAIN__OCT__DISTRIBUTED": "true",
        "RETINA_EVALUATION__BOOTSTRAP": "50",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    write_synthetic(tmp_path / "synth", SynthSpec(fundus=0, oct=40, pairs=0, size=48, seed=2))
    verbs.ingest(settings, Source.KERMANY, str(tmp_path / "synth" / "kermany"))

    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    proc = subprocess.Popen(
        [*cmd, str(Path(__file__).with_name("ddp_verb_worker.py")), str(out)],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    try:
        assert proc.wait(timeout=400) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    report = json.loads(out.read_text())
    assert (report["version"], report["reused"], len(report["history"])) == (1, False, 2)
    assert report["extras"]["training_processes"] == 2
    assert [v.version for v in list_versions(verbs.catalog_engine(settings), "oct_cnn")] == [1]
    assert not list((tmp_path / "home" / "store" / "checkpoints").rglob("*.pt"))
