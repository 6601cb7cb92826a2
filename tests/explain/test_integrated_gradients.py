"""Integrated Gradients maps: complete, pointing at the planted lesion, faithful under ROAD."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from retina_core.explain.integrated_gradients import blurred_baseline, ig_maps, integrated_gradients
from retina_core.explain.pointing import score_pointing, summarise_pointing
from retina_core.explain.road import road_scores


def test_attributions_sum_to_the_score_change_from_the_baseline(
    lesion_detector: nn.Module, lesion_batch: tuple[Tensor, np.ndarray]
) -> None:
    images = lesion_batch[0][:4]
    attributions, delta = integrated_gradients(lesion_detector, images, [1] * 4, n_steps=64)
    with torch.no_grad():
        change = lesion_detector(images)[:, 1] - lesion_detector(blurred_baseline(images))[:, 1]
    assert change.abs().min() > 1.0  # the baseline really removes the evidence, so the check has teeth
    total = attributions.sum(dim=(1, 2, 3))
    np.testing.assert_allclose(total.numpy(), change.numpy(), rtol=0.02)
    assert (delta.abs() <= 0.02 * change.abs()).all()


def test_ig_maps_win_the_pointing_game_above_random(
    lesion_detector: nn.Module, lesion_batch: tuple[Tensor, np.ndarray]
) -> None:
    images, masks = lesion_batch
    maps = ig_maps(lesion_detector, images, targets=[1] * len(images))
    assert maps.shape == (len(images), *images.shape[-2:])
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    rng = np.random.default_rng(0)
    records = [score_pointing("lesion", m, mask, rng) for m, mask in zip(maps, masks, strict=True)]
    pooled = next(s for s in summarise_pointing(records) if s.label == "all")
    assert pooled.hit_rate >= 0.875 and pooled.hit_rate > pooled.random_hit_rate + 0.5, pooled
    assert pooled.energy > 2 * pooled.random_energy, pooled


def test_removing_what_ig_ranks_first_hurts_more_than_random(
    lesion_detector: nn.Module, lesion_batch: tuple[Tensor, np.ndarray]
) -> None:
    images = lesion_batch[0][:4]
    maps = ig_maps(lesion_detector, images, targets=[1] * 4)
    comparison = road_scores(lesion_detector, images, maps, [1] * 4, percentiles=(50, 80))
    assert comparison.cam.morf.mean() < comparison.random.morf.mean() - 0.3
    assert comparison.cam.combined.mean() > comparison.random.combined.mean()
