"""One optimiser step exactly as the training loop takes it, without the loop around it.

``retina_core.training.loop.fit`` runs epochs with a DataLoader, validation and
checkpoints; the throughput rows need only the step itself (forward, loss, backward,
AdamW update) on batches already in memory, with the same precision and memory-format
choices the loop makes on the same device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from retina_core.models.device import autocast_dtype


@dataclass
class StepRunner:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = self.loss_fn(self.model(x).float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the clock must see the GPU's work, not its queue
        return float(loss.detach())


def step_runner(
    model: nn.Module, device: torch.device, *, amp: bool, channels_last: bool | None = None
) -> StepRunner:
    """AMP and channels_last follow the loop's rule (CUDA only) unless ``channels_last`` is given."""
    if channels_last is None:
        channels_last = device.type == "cuda"
    model.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return StepRunner(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4),
        loss_fn=nn.CrossEntropyLoss().to(device),
        device=device,
        dtype=autocast_dtype(device, amp),
        channels_last=channels_last,
    )


def random_batch(
    batch: int, channels: int, size: int, classes: int, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Normalised-looking inputs and labels: a step's cost does not depend on the pixels."""
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, channels, size, size, generator=gen),
        torch.randint(0, classes, (batch,), generator=gen),
    )
