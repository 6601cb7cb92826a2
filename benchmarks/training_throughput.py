"""Training throughput: images/s of one train step per model at 128 and 224 px, fp32.

No baseline: these are reference figures. Each configuration gets one untimed warm-up
step (first-step allocations) and then timed steps on a batch already in memory. On a
CUDA machine AMP and channels_last variants are measured too; on CPU only fp32 is (CPU
autocast is off in training, see ``models.device``).
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.fixtures import BenchContext, bench_settings
from benchmarks.harness import BenchmarkResult, Budget, Samples, Side, measure
from benchmarks.train_step import random_batch, step_runner
from retina_core.domain import Modality, num_classes
from retina_core.models import create_model
from retina_core.models.architectures import model_for_modality
from retina_core.models.device import select_device

NAME = "training throughput"
SIZES = (128, 224)


def variants(device: torch.device) -> list[tuple[str, bool, bool]]:
    """(label, amp, channels_last) to measure on this device."""
    if device.type != "cuda":
        return [("fp32", False, False)]
    return [("fp32", False, False), ("amp", True, False), ("amp+channels_last", True, True)]


def step_rate(
    modality: Modality,
    architecture: str,
    size: int,
    device: torch.device,
    *,
    batch: int,
    amp: bool,
    channels_last: bool,
    budget: Budget,
) -> Samples:
    """Timed train steps of this modality's registered model on one in-memory batch."""
    torch.manual_seed(0)
    model = create_model(model_for_modality(modality), architecture=architecture, image_size=size)
    runner = step_runner(model, device, amp=amp, channels_last=channels_last)
    x, y = random_batch(batch, model.spec.in_chans, size, num_classes(modality))
    return measure(Side(f"{model.spec.name} {size} px", lambda _: runner.step(x, y), images=batch), budget)


def run(ctx: BenchContext) -> BenchmarkResult:
    train = bench_settings(ctx.root / "throughput-home", image_size=128).train
    device = select_device(train.device)
    batch = ctx.pick(32, 4)
    budget = ctx.pick(Budget(3, 4, 10, warmup=1), Budget(1, 1, 0, warmup=1))
    rates: dict[str, dict[str, Any]] = {}
    for modality in (Modality.FUNDUS, Modality.OCT):
        ms = train.fundus if modality is Modality.FUNDUS else train.oct
        name = model_for_modality(modality)
        for size in SIZES:
            for label, amp, channels_last in variants(device):
                samples = step_rate(
                    modality, ms.architecture, size, device, batch=batch, amp=amp, channels_last=channels_last,
                    budget=budget,
                )  # fmt: skip
                rates.setdefault(f"{name} ({ms.architecture})", {})[f"{size}px {label}"] = {
                    "images_per_s": samples.work_per_second,
                    "step_seconds": samples.seconds,
                }
    summary = "; ".join(
        f"{model}: " + ", ".join(f"{cfg} {v['images_per_s']:.1f} img/s" for cfg, v in cfgs.items())
        for model, cfgs in rates.items()
    )
    gpu_note = (
        "AMP and channels_last measured on CUDA."
        if device.type == "cuda"
        else "No GPU on this machine: AMP vs fp32 and channels_last were not measured."
    )
    return BenchmarkResult(
        name=NAME,
        summary=summary,
        target_text="report (no target)",
        warmup=budget.warmup,
        figures={"device": str(device), "batch_size": batch, "rates": rates},
        notes=[
            f"One train step (forward, loss, backward, AdamW) on a batch of {batch} already in memory, "
            f"on {device.type}; median of {budget.min_reps}–{budget.max_reps} steps after 1 untimed "
            f"warm-up step per configuration. {gpu_note}",
        ],
    )
