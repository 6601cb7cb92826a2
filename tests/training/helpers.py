"""A tiny, clearly learnable image task for loop tests: the class is where a bright blob sits."""

from __future__ import annotations

import numpy as np

from retina_core.training.loop import SplitArrays


def blob_split(n: int, size: int, seed: int, classes: int = 4) -> SplitArrays:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 60, size=(n, size, size), dtype=np.uint8)
    half = size // 2
    for img, label in zip(images, labels, strict=True):
        r, c = divmod(int(label), 2)
        img[r * half + 2 : (r + 1) * half - 2, c * half + 2 : (c + 1) * half - 2] = 220
    return SplitArrays(
        images=images,
        labels=labels.astype(np.int64),
        patient_ids=np.array([f"p{i}" for i in range(n)], dtype=object),
        shas=[f"{i:064x}" for i in range(n)],
    )
