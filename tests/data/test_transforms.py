"""Train/eval pipelines: tensor layout, the spec's normalisation, and modality-safe augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retina_core.data.transforms import build_eval_transform, build_train_transform
from retina_core.domain import Modality, class_names
from retina_core.models.spec import ModelSpec

SIZE = 32


def _spec(modality: Modality) -> ModelSpec:
    fundus = modality is Modality.FUNDUS
    return ModelSpec(
        name="fundus_cnn" if fundus else "oct_cnn",
        modality=modality,
        architecture="resnet10t",
        in_chans=3 if fundus else 1,
        image_size=SIZE,
        mean=(0.4, 0.5, 0.6) if fundus else (0.5,),
        std=(0.2, 0.25, 0.3) if fundus else (0.25,),
        label_names=tuple(class_names(modality)),
        num_outputs=len(class_names(modality)),
        embedding_dim=512,
        cam_layer="backbone.layer4",
    )


def _image(modality: Modality, value: int = 128) -> np.ndarray:
    shape = (SIZE, SIZE, 3) if modality is Modality.FUNDUS else (SIZE, SIZE)
    return np.full(shape, value, dtype=np.uint8)


@pytest.mark.parametrize("modality", list(Modality))
def test_eval_transform_normalises_with_the_spec(modality: Modality) -> None:
    spec = _spec(modality)
    out = build_eval_transform(spec)(image=_image(modality))["image"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.shape == (spec.in_chans, SIZE, SIZE)
    expected = (128 / 255 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    torch.testing.assert_close(out[:, 0, 0], expected.float())
    torch.testing.assert_close(out.amin(dim=(1, 2)), out.amax(dim=(1, 2)))


@pytest.mark.parametrize("modality", list(Modality))
def test_train_transform_shape_and_randomness(modality: Modality) -> None:
    spec = _spec(modality)
    rng = np.random.default_rng(0)
    image = rng.integers(30, 220, size=_image(modality).shape, dtype=np.uint8)
    transform = build_train_transform(spec)
    transform.set_random_seed(0)
    outs = [transform(image=image)["image"] for _ in range(8)]
    assert all(o.shape == (spec.in_chans, SIZE, SIZE) and o.dtype == torch.float32 for o in outs)
    assert all(torch.isfinite(o).all() for o in outs)
    assert len({o.sum().item() for o in outs}) > 1  # augmentation actually varies the sample


def _top_heavy(modality: Modality) -> np.ndarray:
    image = _image(modality, value=20)
    image[: SIZE // 2] = 220
    return image


def test_oct_is_never_turned_upside_down() -> None:
    """Vitreous above, choroid below: a vertical flip or large rotation would be a different anatomy."""
    transform = build_train_transform(_spec(Modality.OCT))
    transform.set_random_seed(1)
    for _ in range(30):
        out = transform(image=_top_heavy(Modality.OCT))["image"][0]
        assert out[: SIZE // 2 - 4].mean() > out[SIZE // 2 + 4 :].mean()


def test_fundus_orientation_is_augmented() -> None:
    transform = build_train_transform(_spec(Modality.FUNDUS))
    transform.set_random_seed(2)
    upside_down = 0
    for _ in range(30):
        out = transform(image=_top_heavy(Modality.FUNDUS))["image"]
        upside_down += int(out[:, : SIZE // 2].mean() < out[:, SIZE // 2 :].mean())
    assert 3 <= upside_down <= 27
