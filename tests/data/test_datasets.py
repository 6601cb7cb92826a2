"""ArrayDataset feeds a DataLoader from one in-memory array and pickles as a single buffer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from retina_core.data.datasets import ArrayDataset, ImageRecord
from retina_core.data.transforms import build_eval_transform
from retina_core.domain import Modality, Split, class_names
from retina_core.models.spec import ModelSpec

OCT_SPEC = ModelSpec(
    name="oct_cnn",
    modality=Modality.OCT,
    architecture="resnet10t",
    in_chans=1,
    image_size=32,
    mean=(0.5,),
    std=(0.25,),
    label_names=tuple(class_names(Modality.OCT)),
    num_outputs=4,
    embedding_dim=512,
    cam_layer="backbone.layer4",
)


def _dataset(n: int = 6) -> ArrayDataset:
    images = np.stack([np.full((32, 32), (10 * i) % 256, dtype=np.uint8) for i in range(n)])
    return ArrayDataset(images, [i % 4 for i in range(n)], build_eval_transform(OCT_SPEC))


def test_items_are_transformed_tensors_with_int_labels() -> None:
    image, label = _dataset()[3]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert label == 3 and isinstance(label, int)
    torch.testing.assert_close(image[0, 0, 0], torch.tensor((30 / 255 - 0.5) / 0.25))


def test_dataloader_batches() -> None:
    images, labels = next(iter(DataLoader(_dataset(), batch_size=4)))
    assert images.shape == (4, 1, 32, 32)
    assert labels.tolist() == [0, 1, 2, 3]


def test_pickles_about_as_small_as_its_pixels() -> None:
    dataset = _dataset(64)
    blob = pickle.dumps(dataset)
    assert len(blob) < dataset.images.nbytes + 20_000
    again = pickle.loads(blob)
    torch.testing.assert_close(again[5][0], dataset[5][0])


def test_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="labels"):
        ArrayDataset(np.zeros((3, 8, 8), np.uint8), [0, 1], build_eval_transform(OCT_SPEC))
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(np.zeros((3, 8, 8), np.float32), [0, 1, 2], build_eval_transform(OCT_SPEC))


def test_image_record_is_frozen() -> None:
    record = ImageRecord("c" * 64, Modality.OCT, 2, "p1", Split.TRAIN, f"images/oct/{'c' * 64}.jpeg")
    with pytest.raises(AttributeError):
        record.label = 3  # type: ignore[misc]
