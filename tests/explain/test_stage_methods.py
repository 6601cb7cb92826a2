"""The explain stage scores Integrated Gradients beside the CAM method, and its gallery can switch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from retina_core.config import ExplainSettings
from retina_core.explain import stage
from retina_core.explain.stage import explain_model
from retina_core.models import RetinaClassifier

N, SIDE = 6, 32


@pytest.fixture
def small_test_split() -> tuple[stage.TestPredictions, dict[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 120, size=(N, SIDE, SIDE, 3), dtype=np.uint8)
    masks = {}
    for i in range(N):
        images[i, 8:16, 8:16] = 255
        mask = np.zeros((SIDE, SIDE), bool)
        mask[8:16, 8:16] = True
        masks[i] = mask
    labels = np.arange(N) % 2 + 1  # diseased classes, so every image is scored
    probs = np.full((N, 3), 0.1)
    probs[np.arange(N), labels] = 0.8
    preds = stage.TestPredictions(images, labels, probs, [f"{i:064x}" for i in range(N)], [""] * N)
    return preds, masks


def test_ig_is_scored_on_the_same_images_and_the_gallery_can_draw_it(
    make_classifier: Callable[..., RetinaClassifier],
    small_test_split: tuple[stage.TestPredictions, dict[int, np.ndarray]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    preds, masks = small_test_split
    monkeypatch.setattr(stage, "_masks", lambda store, model, p, idx: {i: masks[i] for i in idx})
    model = make_classifier("resnet18", image_size=SIDE)
    drawn: list[str] = []
    real_map_method = stage._map_method

    def recording(name: str, settings: ExplainSettings) -> stage.MapsFor:
        drawn.append(name)
        return real_map_method(name, settings)

    monkeypatch.setattr(stage, "_map_method", recording)
    settings = ExplainSettings(examples_per_class=1, max_images=N, gallery_method="integrated_gradients")
    section = explain_model(model, preds, None, settings, tmp_path)  # type: ignore[arg-type]
    assert section.method == "gradcam" and section.pointing is not None and section.road is not None
    [ig] = section.compared
    assert ig.method == "integrated_gradients" and ig.pointing is not None and ig.road is not None
    assert [(p.label, p.n) for p in ig.pointing] == [(p.label, p.n) for p in section.pointing]
    # same images and the same random maps: the random columns agree row by row
    assert [p.random_hit_rate for p in ig.pointing] == [p.random_hit_rate for p in section.pointing]
    assert [(r.label, r.n) for r in ig.road] == [(r.label, r.n) for r in section.road]
    assert section.gallery_method == "integrated_gradients" and section.gallery
    assert drawn[-1] == "integrated_gradients"  # the gallery's maps

    without = explain_model(
        model,
        preds,
        None,
        ExplainSettings(examples_per_class=1, max_images=N, integrated_gradients=False),
        tmp_path,  # type: ignore[arg-type]
    )
    assert without.compared == [] and without.gallery_method == "gradcam"
