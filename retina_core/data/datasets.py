"""What training and evaluation see of the data: records, and a dataset over arrays in memory.

Training reads the whole preprocessed split into one uint8 array first (the cache makes
that fast and the images are small), so the torch dataset is just indexing plus the
random transform. One contiguous array pickles as a single buffer, which keeps spawning
DataLoader workers cheap; a list of per-image arrays or open file handles would not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from retina_core.data.records import ImageRecord

Transform = Callable[..., dict[str, Any]]
"""An albumentations pipeline: called as ``transform(image=array)``, returns ``{"image": tensor}``."""

__all__ = ["ArrayDataset", "ImageRecord", "Transform"]


class ArrayDataset(Dataset[tuple[torch.Tensor, int]]):
    """(N, H, W[, C]) uint8 images and N integer labels, transformed on access."""

    def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray, transform: Transform) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if images.ndim not in (3, 4) or images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W[, C]) uint8, got {images.dtype}{images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = np.ascontiguousarray(images)
        self.labels = labels
        self.transform = transform
        self.augment_seed: int | None = None
        """When set, image ``i``'s random augmentation is seeded from (this, ``i``), so it does
        not depend on which process, loader worker or position in the epoch draws it: a
        data-parallel run then augments exactly as a single process, and loader workers stop
        replaying one shared random stream."""

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.augment_seed is not None:
            self.transform.set_random_seed((self.augment_seed * 1_000_003 + index) % 2**32)  # type: ignore[attr-defined]
        return self.transform(image=self.images[index])["image"], int(self.labels[index])
