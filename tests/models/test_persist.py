"""A registered model's files round-trip, and weights that changed after registration are refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from retina_core.domain import Modality
from retina_core.models import create_model
from retina_core.models.architectures import model_for_modality
from retina_core.models.persist import WEIGHTS_FILE, DamagedWeights, load_classifier, model_files
from retina_core.storage import LocalObjectStore


def test_load_classifier_checks_the_recorded_hash(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(model_for_modality(Modality.OCT), architecture="resnet18", image_size=32)
    files = model_files(model.eval(), model.spec.to_dict(), {}, {})
    store = LocalObjectStore(tmp_path / "store")
    for name, data in files.items():
        store.put_bytes(f"models/oct_cnn/1/{name}", data)
    recorded = hashlib.sha256(files[WEIGHTS_FILE]).hexdigest()

    loaded = load_classifier(store, "models/oct_cnn/1", sha256=recorded)
    batch = torch.rand(2, model.spec.in_chans, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(batch), model(batch))

    tampered = bytearray(files[WEIGHTS_FILE])
    tampered[-1] ^= 0xFF
    (tmp_path / "store" / "models/oct_cnn/1" / WEIGHTS_FILE).write_bytes(bytes(tampered))
    with pytest.raises(DamagedWeights, match="changed after registration"):
        load_classifier(store, "models/oct_cnn/1", sha256=recorded)
