"""Borrowing a model to explain it, and handing it back exactly as it was.

Explanations run on models that may be mid-training (a validation callback) or shared
with other code. Grad-CAM needs eval mode (batch-norm statistics and dropout must not
change the decision being explained) and a backward pass; neither may leak out. The
gradients are taken with respect to the *input*, with every parameter frozen for the
duration, so no ``.grad`` buffer of the model is written or cleared and frozen encoders
(fusion) explain exactly like trainable ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def borrowed_for_explanation(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters inside; every module's mode and flag restored after.

    Modes are saved per module, not as one ``model.training`` flag, because a fine-tuning
    loop may keep a frozen backbone in eval mode inside a model that is in train mode.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    model.eval()
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)
