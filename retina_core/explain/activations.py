"""Bringing a target layer's activations to the (N, C, H, W) grid pytorch-grad-cam expects.

CNN layers already produce that grid. Vision transformers produce tokens (N, T, C): some
prefix tokens (class, register, distillation; timm counts them in ``num_prefix_tokens``)
followed by one token per patch in row-major order. Swin-style timm models produce
channels-last grids (N, H, W, C) and say so with ``output_fmt == "NHWC"``. Getting this
wrong does not fail loudly: Grad-CAM would happily average over the wrong axis, so the
layout is read from the model rather than guessed from a shape alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class ActivationLayout:
    """How a backbone's activations are laid out, and the input size they came from."""

    num_prefix_tokens: int
    channels_last: bool
    input_hw: tuple[int, int]

    def __call__(self, activations: Tensor) -> Tensor:
        """Used as pytorch-grad-cam's ``reshape_transform``: applied to activations and gradients."""
        if activations.ndim == 3:
            return self._tokens_to_grid(activations)
        if activations.ndim == 4 and self.channels_last:
            return activations.permute(0, 3, 1, 2)
        return activations

    def _tokens_to_grid(self, tokens: Tensor) -> Tensor:
        patches = tokens[:, self.num_prefix_tokens :, :]
        height, width = patch_grid(patches.shape[1], self.input_hw)
        grid = patches.reshape(tokens.shape[0], height, width, tokens.shape[2])
        return grid.permute(0, 3, 1, 2)


def patch_grid(num_patches: int, input_hw: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of a patch grid with the input's aspect ratio (patches are square)."""
    in_h, in_w = input_hw
    height = round(math.sqrt(num_patches * in_h / in_w))
    width = num_patches // max(height, 1)
    if height * width != num_patches:
        raise ValueError(
            f"{num_patches} patch tokens do not form a grid with the input's {in_h}x{in_w} aspect; "
            "is num_prefix_tokens right for this model?"
        )
    return height, width


def layout_of(model: nn.Module, input_hw: tuple[int, int]) -> ActivationLayout:
    """The layout of ``model`` (a RetinaClassifier or a bare timm model) for one input size."""
    backbone = getattr(model, "backbone", model)
    output_fmt = getattr(backbone, "output_fmt", "NCHW")
    return ActivationLayout(
        num_prefix_tokens=int(getattr(backbone, "num_prefix_tokens", 0) or 0),
        channels_last=getattr(output_fmt, "value", output_fmt) == "NHWC",  # a str or timm's Format enum
        input_hw=input_hw,
    )
