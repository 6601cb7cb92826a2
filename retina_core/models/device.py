"""Where and how a model runs: CUDA + AMP + pinned memory when present, lean on CPU; seeded.

Shared by training and inference (prediction, embedding, Grad-CAM), so neither imports the other.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python; called before model init and at every epoch start."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def select_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA device is available")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16; None on CPU.

    CPU autocast is left off: on the small CPUs this runs on it is slower than fp32.
    """
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def default_workers(device: torch.device) -> int:
    """Loader workers sized to the machine.

    Cached images only need augmenting, which is cheap: on a 2-core machine a worker
    process would steal a core from the model, so the main process does it; on a GPU
    host the CPU side must keep up with the GPU, so most cores become workers.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if device.type == "cuda":
        return max(2, min(8, cores - 1))
    return 0 if cores <= 2 else min(4, cores // 2)


def loader_kwargs(device: torch.device, num_workers: int | None) -> dict[str, Any]:
    workers = default_workers(device) if num_workers is None else num_workers
    kwargs: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        kwargs |= {"persistent_workers": True, "prefetch_factor": 4}
    return kwargs
