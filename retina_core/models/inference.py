"""Running a trained model over images prepared the way it was trained.

Prediction, embedding, Grad-CAM and training's own validation all need the same two
things: the preprocessed cache that matches a model's spec, and batched, autograd-free
passes over its uint8 arrays. They live here, beside the model, so that fusion and
explain use them without importing training.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from retina_core.data.datasets import ArrayDataset
from retina_core.data.image_cache import PreprocessedCache
from retina_core.data.transforms import build_eval_transform
from retina_core.models.classifier import RetinaClassifier
from retina_core.models.device import autocast_dtype, loader_kwargs
from retina_core.models.spec import ModelSpec
from retina_core.storage import ObjectStore


def cache_for(store: ObjectStore, spec: ModelSpec) -> PreprocessedCache:
    """The preprocessed images this model was trained on (size, field crop, Ben Graham from its spec)."""
    return PreprocessedCache(store, spec.preprocessing)


def predict_logits(
    model: RetinaClassifier,
    images: np.ndarray,
    device: torch.device,
    *,
    batch_size: int = 64,
    amp: bool = True,
    num_workers: int | None = None,
) -> np.ndarray:
    """Logits (or regression scores, shape (N, 1)) for preprocessed uint8 images."""
    return infer_batches(
        model,
        model,
        images,
        device,
        model.spec.num_outputs,
        batch_size=batch_size,
        amp=amp,
        num_workers=num_workers,
    )


def infer_batches(
    model: RetinaClassifier,
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray,
    device: torch.device,
    width: int,
    *,
    batch_size: int = 64,
    amp: bool = True,
    num_workers: int | None = None,
) -> np.ndarray:
    """Batched, autograd-free ``forward`` over uint8 images (eval transforms, AMP and channels_last on CUDA)."""
    dataset = ArrayDataset(images, np.zeros(len(images), dtype=np.int64), build_eval_transform(model.spec))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, **loader_kwargs(device, num_workers))
    dtype = autocast_dtype(device, amp)
    model.eval().to(device)
    outs: list[np.ndarray] = []
    with torch.inference_mode():
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outs.append(forward(x).float().cpu().numpy())
    return (
        np.concatenate(outs).astype(np.float32, copy=False)
        if outs
        else np.zeros((0, width), dtype=np.float32)
    )
