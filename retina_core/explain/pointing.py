"""Does the map point at the lesion? The pointing game, scored against a random-map baseline.

With synthetic lesion masks the question "is Grad-CAM looking at the right thing" has a
number for an answer. Two scores, both pure numpy:

- *Pointing game* (Zhang et al. 2016, "Top-down neural attention by excitation backprop"):
  a hit when the map's maximum falls on the lesion, within a tolerance. The original uses
  15 px at a 224 px input, i.e. about 6.7 % of the image side, forgiving the coarse grid
  a CAM is upsampled from. Maps here are at the model's input size, so the tolerance is
  scaled to it: ``15 * sqrt(H * W) / 224`` (4.3 px at 64 px, 8.6 px at 128 px).
- *Energy-based pointing game* (Wang et al. 2020, Score-CAM): the share of the map's total
  mass that lies inside the lesion mask. It rewards maps that are concentrated, not only
  maps whose peak lands by luck.

Neither number means anything alone: a lesion covering 30 % of the image is "hit" by a
third of all random maps. So every score comes with the same score for smooth random
maps (Gaussian-blurred noise, evaluated exactly like a CAM): a map is only informative to
the extent it beats that baseline.

Images with an empty mask (normal eyes, no lesion) are excluded rather than scored: there
is nothing to point at, a miss there would punish a model for correctly finding nothing,
and a CAM normalised to [0, 1] always has a maximum somewhere, so any score would be noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ZHANG_TOLERANCE_PX = 15.0
ZHANG_INPUT_PX = 224.0
_RANDOM_CHUNK = 32
"""Random maps are generated this many at a time, so memory stays bounded at large sizes."""


def default_tolerance_px(shape: tuple[int, ...]) -> float:
    """Zhang et al.'s 15 px at 224 px, scaled to a map of this (H, W)."""
    height, width = shape[-2:]
    return ZHANG_TOLERANCE_PX * math.sqrt(height * width) / ZHANG_INPUT_PX


def default_smooth_sigma(shape: tuple[int, ...]) -> float:
    """Blur for random maps: ~1/14 of the side, half a cell of a stride-32 CNN's 7x7 grid at 224 px.

    Random maps must be about as smooth as real CAMs (which are upsampled from such a grid),
    otherwise their energy scores would differ for reasons that have nothing to do with
    where they point.
    """
    return min(shape[-2:]) / 14.0


def pointing_game_hit(cam: np.ndarray, mask: np.ndarray, tolerance_px: float | None = None) -> bool:
    """True when the map's maximum lies within ``tolerance_px`` of a lesion pixel.

    The tolerance is a Euclidean distance, the same as dilating the mask with a disc. A
    constant map has no maximum and points nowhere: a miss. Ties between several maxima
    go to the first in row-major order, as ``np.argmax`` does.
    """
    cam = _checked_cam(cam)
    lesion = _lesion_mask(mask, cam.shape)
    tolerance = default_tolerance_px(cam.shape) if tolerance_px is None else float(tolerance_px)
    if cam.max() == cam.min():
        return False
    point = np.array(np.unravel_index(int(np.argmax(cam)), cam.shape))
    return bool(_within(point[None, :], lesion, tolerance)[0])


def energy_pointing_game(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's mass inside the lesion mask, in [0, 1].

    An all-zero map carries no preference, so it scores like a uniform one: the lesion's
    area fraction, the chance level.
    """
    cam = _checked_cam(cam)
    lesion = _lesion_mask(mask, cam.shape)
    total = float(cam.sum(dtype=np.float64))
    if total == 0.0:
        return float(lesion.mean())
    return float(cam[lesion].sum(dtype=np.float64) / total)


def smooth_random_maps(
    shape: tuple[int, int], rng: np.random.Generator, n: int, smooth_sigma: float | None = None
) -> np.ndarray:
    """``n`` Gaussian-blurred noise maps (n, H, W), each min-max scaled to [0, 1] like a CAM.

    The noise is drawn on a canvas padded by three sigmas and blurred in 'valid' mode, so the
    field is stationary: a blur truncated at the border would give border pixels fewer
    samples, more variance, and so more of the maxima.
    """
    height, width = shape
    sigma = default_smooth_sigma(shape) if smooth_sigma is None else float(smooth_sigma)
    if sigma < 0:
        raise ValueError("smooth_sigma must be >= 0")
    pad = math.ceil(3 * sigma)
    rows, cols = _blur_matrix(height, pad, sigma), _blur_matrix(width, pad, sigma)
    noise = rng.standard_normal((n, height + 2 * pad, width + 2 * pad), dtype=np.float32)
    maps = rows @ noise @ cols.T
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return ((maps - low) / np.maximum(span, 1e-12)).astype(np.float32)


def random_map_baseline(
    mask: np.ndarray,
    rng: np.random.Generator,
    n: int = 100,
    smooth_sigma: float | None = None,
    tolerance_px: float | None = None,
) -> tuple[float, float]:
    """(hit rate, mean energy) of ``n`` smooth random maps on this mask: the chance level."""
    lesion = _lesion_mask(mask, np.shape(mask))
    tolerance = default_tolerance_px(lesion.shape) if tolerance_px is None else float(tolerance_px)
    hits = energy = 0.0
    for start in range(0, n, _RANDOM_CHUNK):
        maps = smooth_random_maps(lesion.shape, rng, min(_RANDOM_CHUNK, n - start), smooth_sigma)
        flat = maps.reshape(len(maps), -1)
        points = np.stack(np.unravel_index(flat.argmax(axis=1), lesion.shape), axis=1)
        hits += float(_within(points, lesion, tolerance).sum())
        energy += float((flat[:, lesion.ravel()].sum(axis=1) / flat.sum(axis=1)).sum())
    return hits / n, energy / n


@dataclass(frozen=True)
class PointingRecord:
    """One image's scores; ``lesion_fraction == 0`` marks a normal image, left out of summaries."""

    label: str
    lesion_fraction: float
    hit: bool
    energy: float
    random_hit_rate: float
    random_energy: float


def score_pointing(
    label: str,
    cam: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    n_random: int = 100,
    tolerance_px: float | None = None,
) -> PointingRecord:
    """Both scores and their random baselines for one image (NaN scores when the mask is empty)."""
    cam = _checked_cam(cam)
    lesion = _resized_nearest(np.asarray(mask) > 0, cam.shape)
    if not lesion.any():
        return PointingRecord(label, 0.0, False, math.nan, math.nan, math.nan)
    random_hit_rate, random_energy = random_map_baseline(lesion, rng, n_random, tolerance_px=tolerance_px)
    return PointingRecord(
        label=label,
        lesion_fraction=float(lesion.mean()),
        hit=pointing_game_hit(cam, lesion, tolerance_px),
        energy=energy_pointing_game(cam, lesion),
        random_hit_rate=random_hit_rate,
        random_energy=random_energy,
    )


@dataclass(frozen=True)
class PointingSummary:
    """One row of the per-class table; ``label == "all"`` pools every class."""

    label: str
    n: int
    """Images scored (with a lesion)."""
    n_excluded: int
    """Images without a lesion, left out (see the module docstring for why)."""
    hit_rate: float
    energy: float
    random_hit_rate: float
    random_energy: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_pointing(records: Iterable[PointingRecord]) -> list[PointingSummary]:
    """Per-class means in order of first appearance, then an ``all`` row. NaN where n == 0."""
    by_label: dict[str, list[PointingRecord]] = {}
    for record in records:
        by_label.setdefault(record.label, []).append(record)
    every = [record for group in by_label.values() for record in group]
    return [_summary(label, group) for label, group in [*by_label.items(), ("all", every)]]


def _summary(label: str, records: list[PointingRecord]) -> PointingSummary:
    scored = [r for r in records if r.lesion_fraction > 0]

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else math.nan

    return PointingSummary(
        label=label,
        n=len(scored),
        n_excluded=len(records) - len(scored),
        hit_rate=mean([float(r.hit) for r in scored]),
        energy=mean([r.energy for r in scored]),
        random_hit_rate=mean([r.random_hit_rate for r in scored]),
        random_energy=mean([r.random_energy for r in scored]),
    )


def _checked_cam(cam: np.ndarray) -> np.ndarray:
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim != 2:
        raise ValueError(f"a map must be 2-D (H, W), got shape {cam.shape}")
    if not np.isfinite(cam).all() or cam.min() < 0:
        raise ValueError("a map must be finite and non-negative")
    return cam


def _lesion_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean lesion mask at the map's size; an empty one is an error (nothing to point at)."""
    lesion = _resized_nearest(np.asarray(mask) > 0, shape)
    if not lesion.any():
        raise ValueError(
            "empty mask: nothing to point at (normal images are excluded from the pointing game)"
        )
    return lesion


def _resized_nearest(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Masks come at the image's size, maps at the model's input size: nearest-neighbour resize."""
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.shape == tuple(shape):
        return mask
    rows = (np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0]
    cols = (np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1]
    return mask[rows.astype(int)[:, None], cols.astype(int)[None, :]]


def _within(points: np.ndarray, lesion: np.ndarray, tolerance: float) -> np.ndarray:
    """For each (row, col) point: is some lesion pixel within ``tolerance`` (Euclidean)?"""
    lesion_rc = np.argwhere(lesion)
    d2 = ((points[:, None, :] - lesion_rc[None, :, :]) ** 2).sum(axis=2)
    return d2.min(axis=1) <= tolerance**2 + 1e-9


def _blur_matrix(size: int, pad: int, sigma: float) -> np.ndarray:
    """(size, size + 2 pad) matrix applying a normalised 1-D Gaussian in 'valid' mode."""
    offsets = np.arange(-pad, pad + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2) if sigma > 0 else (offsets == 0).astype(np.float64)
    kernel /= kernel.sum()
    matrix = np.zeros((size, size + 2 * pad), dtype=np.float32)
    for row in range(size):
        matrix[row, row : row + 2 * pad + 1] = kernel
    return matrix
