"""A registered model's files round-trip, and weights that changed after registration are refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from retina_core.domain import Modality
from retina_core.models import create_model
from retina_core.models.architectures import model_for_modality
from retina_core.models.persist import (
    WEIGHTS_FILE,
    DamagedWeights,
    load_classifier,
    model_files,
    read_spec,
)
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


def old_style_files(ben_graham: bool) -> tuple[dict[str, bytes], str]:
    """A fundus version as registered before the spec carried its preprocessing: ``input_size``
    in spec.json and Ben Graham only in the training settings of config.json."""
    torch.manual_seed(0)
    model = create_model("fundus_cnn", architecture="resnet10t", image_size=32, ben_graham=ben_graham)
    spec = model.spec.to_dict()
    spec["input_size"] = spec.pop("image_size")
    del spec["field_crop"], spec["ben_graham"]
    files = model_files(model.eval(), spec, {"train": {"ben_graham": ben_graham, "image_size": 32}}, {})
    return files, hashlib.sha256(files[WEIGHTS_FILE]).hexdigest()


@pytest.mark.parametrize("ben_graham", [False, True])
def test_a_version_registered_before_the_spec_held_ben_graham_still_loads_as_trained(
    tmp_path: Path, ben_graham: bool
) -> None:
    files, recorded = old_style_files(ben_graham)
    store = LocalObjectStore(tmp_path / "store")
    for name, data in files.items():
        store.put_bytes(f"models/fundus_cnn/1/{name}", data)
    assert "ben_graham" not in json.loads(files["spec.json"])
    spec = read_spec(store, "models/fundus_cnn/1")
    assert (spec.image_size, spec.field_crop, spec.ben_graham) == (32, True, ben_graham)
    assert load_classifier(store, "models/fundus_cnn/1", sha256=recorded).spec == spec


def test_a_new_version_reads_its_preprocessing_from_the_spec_alone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("fundus_cnn", architecture="resnet10t", image_size=32, ben_graham=True)
    store = LocalObjectStore(tmp_path / "store")
    # config.json says otherwise (today's settings, say): the spec, stored with the version, wins.
    files = model_files(model, model.spec.to_dict(), {"train": {"ben_graham": False}}, {})
    for name, data in files.items():
        store.put_bytes(f"models/fundus_cnn/2/{name}", data)
    assert read_spec(store, "models/fundus_cnn/2").preprocessing == model.spec.preprocessing
