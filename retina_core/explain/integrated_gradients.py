"""Integrated Gradients maps for the CNNs (captum), shaped like CAMs so the same scores apply.

Grad-CAM sees the image through one coarse layer; IG attributes the class score to the
input pixels themselves, along a straight path from a baseline image. Both are scored by
the same pointing game and ROAD against the same random maps, so the report can say which
one points at the lesions and which one the model actually relies on.

**Baseline: a heavily blurred copy of the image, not a black field.** IG explains
``F(image) - F(baseline)``, so the baseline decides which features can receive credit:
anything the baseline shares with the image gets none. A black field (zeros, or the
normalised mean) is far from every real fundus photo, and its darkness is shared with the
dark background around the field of view and with dark lesions (haemorrhages), which then
cannot be credited. A blur (Gaussian, sigma an eighth of the side) keeps the global
illumination, colour and the disc/vessel layout at low frequency and removes the small
high-frequency structures where the lesions live (microaneurysms, exudates, drusen, fluid
boundaries): exactly what the question "which detail made the call?" should credit.
Sturmfels, Lundberg & Lee, "Visualizing the Impact of Feature Attribution Baselines"
(Distill, 2020) compare these choices.

A map is the positive part of the attribution summed over channels (evidence *for* the
target, as Grad-CAM's ReLU keeps), lightly smoothed (pixel attributions are speckled, and
a pointing game on a speckled map scores noise), then scaled to [0, 1] per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from retina_core.explain.cam import check_images, choose_targets, model_outputs
from retina_core.explain.state import borrowed_for_explanation

IG_METHOD = "integrated_gradients"
"""The name reports and settings use for this method."""
IG_STEPS = 32
"""Gauss-Legendre steps; completeness error measured below 1% of the score change at 32."""
BLUR_FRACTION = 1 / 8
"""Baseline blur sigma as a fraction of the image side."""
SMOOTH_FRACTION = 1 / 64
"""Map smoothing sigma as a fraction of the side (1 px at 64 px): speckle out, lesions kept."""


def blurred_baseline(images: Tensor, fraction: float = BLUR_FRACTION) -> Tensor:
    """The IG reference for each image: the image itself, Gaussian-blurred (see the module docstring)."""
    sigma = max(images.shape[-1] * fraction, 0.5)
    kernel = int(2 * round(3 * sigma) + 1)
    kernel = min(kernel, 2 * (min(images.shape[-2:]) // 2) - 1)
    return gaussian_blur(images, [kernel, kernel], [sigma, sigma])


def attribution_maps(attributions: Tensor, smooth_fraction: float = SMOOTH_FRACTION) -> np.ndarray:
    """(N, C, H, W) attributions → (N, H, W) float32 maps in [0, 1] (positive evidence, smoothed)."""
    positive = attributions.detach().float().sum(1, keepdim=True).clamp(min=0)
    sigma = attributions.shape[-1] * smooth_fraction
    if sigma >= 0.5:
        kernel = int(2 * round(2 * sigma) + 1)
        positive = gaussian_blur(positive, [kernel, kernel], [sigma, sigma])
    maps = positive[:, 0].cpu().numpy()
    peak = maps.reshape(len(maps), -1).max(1)
    scale = np.where(peak > 0, peak, 1.0)
    return np.clip(maps / scale[:, None, None], 0.0, 1.0).astype(np.float32)


def integrated_gradients(
    model: nn.Module,
    images: Tensor,
    targets: Sequence[int],
    *,
    n_steps: int = IG_STEPS,
    batch_size: int = 8,
) -> tuple[Tensor, Tensor]:
    """Raw IG attributions (N, C, H, W) from the blurred baseline, and each image's completeness error."""
    if len(targets) != images.shape[0]:
        raise ValueError(f"{len(targets)} targets for {images.shape[0]} images")
    device = next(model.parameters()).device
    parts, deltas = [], []
    with borrowed_for_explanation(model), torch.enable_grad():
        ig = IntegratedGradients(model)
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].detach().to(device)
            attr, delta = ig.attribute(
                x,
                baselines=blurred_baseline(x),
                target=[int(t) for t in targets[start : start + batch_size]],
                n_steps=n_steps,
                method="gausslegendre",
                internal_batch_size=max(batch_size, 1) * 4,
                return_convergence_delta=True,
            )
            parts.append(attr.detach().cpu())
            deltas.append(delta.detach().float().cpu().reshape(-1))
    return torch.cat(parts), torch.cat(deltas)


def ig_maps(
    model: nn.Module,
    images: Tensor,
    targets: Sequence[int] | None = None,
    *,
    n_steps: int = IG_STEPS,
    batch_size: int = 8,
) -> np.ndarray:
    """(N, H, W) maps in [0, 1] for ``targets`` (``None``: the predicted class; a regression
    model, one output, always explains its raw score), ready for the pointing game and ROAD."""
    check_images(images)
    spec = getattr(model, "spec", None)
    regression = spec is not None and spec.task == "regression"
    with borrowed_for_explanation(model):
        outputs = model_outputs(model, images, batch_size)
    chosen, _ = choose_targets(outputs, targets, regression)
    attributions, _ = integrated_gradients(model, images, chosen, n_steps=n_steps, batch_size=batch_size)
    return attribution_maps(attributions)
