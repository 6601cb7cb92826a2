from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from retina_core.explain.cam import compute_cams
from retina_core.explain.road import RoadComparison, road_scores


@pytest.fixture
def lesion_road(
    lesion_detector: nn.Module, lesion_batch: tuple[Tensor, np.ndarray]
) -> tuple[RoadComparison, Tensor]:
    images = lesion_batch[0][:4]
    result = compute_cams(lesion_detector, images, targets=[1] * 4, layer="features")
    return road_scores(lesion_detector, images, result.maps, result.targets, percentiles=(50, 80)), images


def test_scores_are_finite_per_image(lesion_road: tuple[RoadComparison, Tensor]) -> None:
    comparison, images = lesion_road
    for scores in (comparison.cam, comparison.random):
        for values in (scores.morf, scores.lerf, scores.combined):
            assert values.shape == (len(images),)
            assert np.isfinite(values).all()
    assert comparison.percentiles == (50, 80) and comparison.confidence == "probability"


def test_removing_what_the_cam_ranks_first_hurts_more_than_random(
    lesion_road: tuple[RoadComparison, Tensor],
) -> None:
    """Removing the bright square (top 20 % of the CAM) destroys the detector's evidence."""
    comparison, _ = lesion_road
    assert comparison.cam.morf.mean() < -0.5
    assert comparison.cam.morf.mean() < comparison.random.morf.mean() - 0.3
    assert comparison.cam.combined.mean() > comparison.random.combined.mean()
    assert abs(comparison.cam.lerf.mean()) < 0.1  # removing background leaves the decision alone


def test_results_repeat_and_leave_the_global_rng_alone(lesion_detector: nn.Module) -> None:
    images = torch.rand(2, 3, 32, 32)
    cams = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    state = torch.random.get_rng_state()
    first = road_scores(lesion_detector, images, cams, [1, 0], percentiles=(50,), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = road_scores(lesion_detector, images, cams, [1, 0], percentiles=(50,), seed=3)
    np.testing.assert_array_equal(first.cam.morf, second.cam.morf)
    np.testing.assert_array_equal(first.random.lerf, second.random.lerf)


def test_blank_maps_still_give_finite_scores(lesion_detector: nn.Module) -> None:
    """A blank Grad-CAM map ties every pixel; ROAD must still rank them and stay finite."""
    comparison = road_scores(
        lesion_detector, torch.rand(1, 3, 32, 32), np.zeros((1, 32, 32)), [1], percentiles=(20,)
    )
    assert np.isfinite(comparison.cam.combined).all()


def test_inputs_are_checked(lesion_detector: nn.Module) -> None:
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="do not match"):
        road_scores(lesion_detector, images, np.zeros((2, 16, 16)), [0, 1])
    with pytest.raises(ValueError, match="targets"):
        road_scores(lesion_detector, images, np.zeros((2, 32, 32)), [0])
    with pytest.raises(ValueError, match="percentiles"):
        road_scores(lesion_detector, images, np.zeros((2, 32, 32)), [0, 1], percentiles=(0, 50))
