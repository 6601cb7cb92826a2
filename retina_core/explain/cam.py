"""Class activation maps for any RetinaClassifier, through pytorch-grad-cam.

pytorch-grad-cam supplies the methods; this module supplies what it leaves to the
caller and what a service must not get wrong: the target layer from the model's spec,
the activation layout (CNN grid, ViT tokens, channels-last), the target (predicted class,
a chosen class, or the raw score of a regression model), bounded memory (batches), and a
model handed back untouched (see :mod:`retina_core.explain.state`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from retina_core.explain.activations import ActivationLayout, layout_of
from retina_core.explain.state import borrowed_for_explanation
from retina_core.models.cam_layer import get_module

logger = logging.getLogger(__name__)

CamTarget = Callable[[Tensor], Tensor]
"""pytorch-grad-cam's target protocol: one sample's model output -> the scalar to explain."""


class CamMethod(StrEnum):
    GRADCAM = "gradcam"
    GRADCAM_PLUSPLUS = "gradcam++"
    EIGENCAM = "eigencam"
    """Gradient-free: the first principal component of the activations. It explains what the
    layer sees, not a class, so the target is ignored (and the sign of a PCA is arbitrary)."""
    SCORECAM = "scorecam"
    """Gradient-free but one forward pass per channel of the layer: slow on CPU."""


_CAM_CLASSES: dict[CamMethod, type[BaseCAM]] = {
    CamMethod.GRADCAM: GradCAM,
    CamMethod.GRADCAM_PLUSPLUS: GradCAMPlusPlus,
    CamMethod.EIGENCAM: EigenCAM,
    CamMethod.SCORECAM: ScoreCAM,
}
_GRADIENT_METHODS = frozenset({CamMethod.GRADCAM, CamMethod.GRADCAM_PLUSPLUS})
_SCORECAM_MIN_CHUNK = 64
"""ScoreCAM runs one masked copy of each image per channel of the layer (hundreds). Pushing
them through a few at a time is dominated by per-call overhead (minutes on CPU for one
image), so its chunk never drops below this; 64 copies cost about one batch of images."""


@dataclass(frozen=True)
class CamResult:
    maps: np.ndarray
    """(N, H, W) float32 in [0, 1], at the input resolution."""
    targets: list[int]
    """The output index each map explains (always 0 for a regression model)."""
    scores: np.ndarray
    """(N,) float32: softmax probability of the target class, or the raw regression score."""
    method: CamMethod
    layer: str
    """Dotted path of the hooked module, relative to the explained model."""


def compute_cams(
    model: nn.Module,
    images: Tensor,
    targets: Sequence[int] | None = None,
    method: CamMethod | str = CamMethod.GRADCAM,
    *,
    layer: str | None = None,
    batch_size: int = 16,
) -> CamResult:
    """Maps for ``images`` (N, C, H, W, already normalised as the model expects).

    ``targets=None`` explains the predicted class. A regression model (``spec.task ==
    "regression"``, one output) always explains its raw score: the map then shows what
    pushes the predicted grade up. ``layer`` overrides ``spec.cam_layer``; a model without a
    spec (any ``nn.Module``) needs it and is treated as a classifier.
    """
    method = CamMethod(method)
    spec = getattr(model, "spec", None)
    layer_path = layer or (spec.cam_layer if spec is not None else None)
    if not layer_path:
        raise ValueError("model has no spec: pass layer= (dotted module path) to choose the CAM layer")
    check_images(images)
    regression = spec is not None and spec.task == "regression"

    with borrowed_for_explanation(model):
        outputs = model_outputs(model, images, batch_size)
    chosen, scores = choose_targets(outputs, targets, regression)
    maps = cam_maps(
        model,
        get_module(model, layer_path),
        images,
        [ClassifierOutputTarget(t) for t in chosen],
        method,
        layout=layout_of(model, (images.shape[-2], images.shape[-1])),
        batch_size=batch_size,
    )
    logger.debug("%s maps for %d images at %s", method, len(chosen), layer_path)
    return CamResult(maps=maps, targets=chosen, scores=scores, method=method, layer=layer_path)


def cam_maps(
    model: nn.Module,
    target_layer: nn.Module,
    images: Tensor,
    targets: Sequence[CamTarget],
    method: CamMethod | str = CamMethod.GRADCAM,
    *,
    layout: ActivationLayout,
    batch_size: int = 16,
) -> np.ndarray:
    """The engine under :func:`compute_cams` and the fusion maps: any module, any target objects.

    Gradients are switched on only here (a caller may be inside ``torch.no_grad``) and taken
    with respect to the input, so a frozen model still yields them at the target layer.
    """
    method = CamMethod(method)
    if len(targets) != images.shape[0]:
        raise ValueError(f"{len(targets)} targets for {images.shape[0]} images")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    device = next(model.parameters()).device
    uses_gradients = method in _GRADIENT_METHODS
    chunks: list[np.ndarray] = []
    with borrowed_for_explanation(model), torch.enable_grad():
        cam = _CAM_CLASSES[method](model=model, target_layers=[target_layer], reshape_transform=layout)
        cam.batch_size = max(batch_size, _SCORECAM_MIN_CHUNK)  # read by ScoreCAM only
        with _hooks_released(cam):
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].detach().to(device)
                batch.requires_grad_(uses_gradients)
                chunks.append(cam(input_tensor=batch, targets=list(targets[start : start + batch_size])))
    maps = np.concatenate(chunks).astype(np.float32)
    return _checked_maps(maps, method)


@contextmanager
def _hooks_released(cam: BaseCAM) -> Iterator[BaseCAM]:
    """The CAM's hooks removed on the way out, like its own context manager, minus its flaw.

    ``BaseCAM.__exit__`` prints and *swallows* any ``IndexError`` raised inside the block
    (e.g. a target index past the last logit), which would leave the caller without maps
    and without an error. Here every exception propagates.
    """
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()


def model_outputs(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        parts = [
            model(images[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    return torch.cat(parts)


def choose_targets(
    outputs: Tensor, targets: Sequence[int] | None, regression: bool
) -> tuple[list[int], np.ndarray]:
    """Target indices and their scores: probability for a classifier, raw value for regression."""
    n, num_outputs = outputs.shape
    if regression:
        if num_outputs != 1:
            raise ValueError(f"a regression model must have one output, this one has {num_outputs}")
        if targets is not None and any(int(t) != 0 for t in targets):
            raise ValueError("a regression model has one output: targets must be None or all 0")
        return [0] * n, outputs[:, 0].numpy().astype(np.float32)
    if targets is None:
        chosen = outputs.argmax(dim=1).tolist()
    else:
        chosen = [int(t) for t in targets]
        if len(chosen) != n:
            raise ValueError(f"{len(chosen)} targets for {n} images")
        if any(not 0 <= t < num_outputs for t in chosen):
            raise ValueError(f"targets must lie in [0, {num_outputs}), got {sorted(set(chosen))}")
    probs = outputs.softmax(dim=1)[torch.arange(n), torch.tensor(chosen, dtype=torch.long)]
    return chosen, probs.numpy().astype(np.float32)


def check_images(images: Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("no images to explain")


def _checked_maps(maps: np.ndarray, method: CamMethod) -> np.ndarray:
    """Fail on non-finite maps; warn about blank ones, which are legal but explain nothing.

    A blank Grad-CAM map means no positive gradient reached the layer, e.g. a ViT hooked
    after its last block while it pools the class token: the patch tokens of that block
    cannot influence the output.
    """
    if not np.isfinite(maps).all():
        raise FloatingPointError(f"{method} produced non-finite maps: check the model and inputs")
    blank = int((maps.reshape(len(maps), -1).max(axis=1) <= 0).sum())
    if blank:
        logger.warning(
            "%s: %d of %d maps are blank (no positive evidence at the layer)", method, blank, len(maps)
        )
    return np.clip(maps, 0.0, 1.0)
