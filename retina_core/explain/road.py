"""ROAD: is the map faithful to the model, on real images without lesion masks?

ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
Methods") removes pixels in the order the map ranks them and watches the model's
confidence. Removed pixels are filled by noisy linear imputation from their neighbours,
not painted black, so the model is not simply reacting to an out-of-distribution hole.

- MoRF (most relevant first): a faithful map makes confidence *drop*; more negative is better.
- LeRF (least relevant first): a faithful map keeps confidence; closer to zero is better.
- combined = (LeRF - MoRF) / 2, as pytorch-grad-cam's ``ROADCombined``; higher is better.

As with the pointing game the numbers need a yardstick, so the same scores are computed
for smooth random maps (:func:`retina_core.explain.pointing.smooth_random_maps`).

Percentiles follow pytorch-grad-cam's convention: at percentile p, MoRF removes the
(100 - p) % highest-ranked pixels and LeRF the (100 - p) % lowest-ranked. Each percentile
solves one sparse linear system per image, so the default list is short to stay usable on
CPU; the paper's nine (10..90) give smoother curves at three times the cost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import Tensor, nn

from retina_core.explain.pointing import smooth_random_maps
from retina_core.explain.state import borrowed_for_explanation

logger = logging.getLogger(__name__)

DEFAULT_PERCENTILES: tuple[int, ...] = (20, 50, 80)
_TIE_JITTER = 1e-6
"""Grad-CAM maps are exactly zero over large areas. A percentile that falls inside such a tie
turns ``mask < threshold`` into all-or-nothing: every pixel is imputed (an ill-posed system
with no known neighbours) instead of the intended fraction. Ties are broken at random with
a jitter far below any real difference, so each percentile removes what it says."""


@dataclass(frozen=True)
class RoadScores:
    """Per-image mean confidence change (after removal - before), averaged over the percentiles."""

    morf: np.ndarray
    lerf: np.ndarray

    @property
    def combined(self) -> np.ndarray:
        return (self.lerf - self.morf) / 2


@dataclass(frozen=True)
class RoadComparison:
    cam: RoadScores
    random: RoadScores
    percentiles: tuple[int, ...]
    confidence: str
    """'probability' (softmax of the target class) or 'score' (raw regression output)."""


def road_scores(
    model: nn.Module,
    images: Tensor,
    cams: np.ndarray,
    targets: Sequence[int],
    *,
    percentiles: Sequence[int] = DEFAULT_PERCENTILES,
    seed: int = 0,
    batch_size: int = 8,
    random_sigma: float | None = None,
) -> RoadComparison:
    """ROAD scores of ``cams`` (N, H, W, at the images' size) and of random maps, per image.

    ``targets`` are the explained output indices (``CamResult.targets``). Confidence is the
    target's softmax probability, or the raw score for a regression model (``spec.task``).
    The imputer's noise comes from torch's global generator; it is forked and seeded here so
    results repeat and the caller's random state is untouched.
    """
    cams = np.asarray(cams, dtype=np.float32)
    _check_inputs(images, cams, targets, percentiles)
    rng = np.random.default_rng(seed)
    random_maps = smooth_random_maps(cams.shape[1:], rng, len(cams), random_sigma)
    spec = getattr(model, "spec", None)
    regression = spec is not None and spec.task == "regression"
    objectives = [
        ClassifierOutputTarget(0) if regression else ClassifierOutputSoftmaxTarget(int(t)) for t in targets
    ]
    morf_metric = ROADMostRelevantFirstAverage(percentiles=list(percentiles))
    lerf_metric = ROADLeastRelevantFirstAverage(percentiles=list(percentiles))
    device = next(model.parameters()).device

    results: dict[str, list[np.ndarray]] = {
        "cam_morf": [],
        "cam_lerf": [],
        "random_morf": [],
        "random_lerf": [],
    }
    with borrowed_for_explanation(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(cams), batch_size):
            batch = images[start : start + batch_size].detach().to(device)
            batch_targets = objectives[start : start + batch_size]
            for name, maps in (("cam", cams), ("random", random_maps)):
                ranked = _break_ties(maps[start : start + batch_size], rng)
                results[f"{name}_morf"].append(morf_metric(batch, ranked, batch_targets, model))
                results[f"{name}_lerf"].append(lerf_metric(batch, ranked, batch_targets, model))
    scores = {name: np.concatenate(parts).reshape(-1).astype(np.float32) for name, parts in results.items()}
    if not all(np.isfinite(values).all() for values in scores.values()):
        raise FloatingPointError("ROAD produced non-finite scores: check the model and inputs")
    logger.debug("ROAD on %d images at percentiles %s", len(cams), list(percentiles))
    return RoadComparison(
        cam=RoadScores(morf=scores["cam_morf"], lerf=scores["cam_lerf"]),
        random=RoadScores(morf=scores["random_morf"], lerf=scores["random_lerf"]),
        percentiles=tuple(int(p) for p in percentiles),
        confidence="score" if regression else "probability",
    )


def _break_ties(maps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (maps + _TIE_JITTER * rng.random(maps.shape, dtype=np.float32)).astype(np.float32)


def _check_inputs(
    images: Tensor, cams: np.ndarray, targets: Sequence[int], percentiles: Sequence[int]
) -> None:
    if images.ndim != 4 or cams.ndim != 3:
        raise ValueError(
            f"expected images (N, C, H, W) and cams (N, H, W), got {tuple(images.shape)}, {cams.shape}"
        )
    if cams.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"cams {cams.shape} do not match images {tuple(images.shape)}")
    if len(targets) != len(cams):
        raise ValueError(f"{len(targets)} targets for {len(cams)} maps")
    if not percentiles or any(not 0 < p < 100 for p in percentiles):
        raise ValueError("percentiles must be a non-empty list of values strictly between 0 and 100")
