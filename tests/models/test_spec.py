"""A model's spec carries everything its inputs need (size, channels, normalisation, crop, Ben Graham)."""

from __future__ import annotations

import json

import pytest

from retina_core.data.preprocess import Preprocessing
from retina_core.domain import Modality
from retina_core.models import ModelSpec, create_model

SIZE = 32


@pytest.mark.parametrize("ben_graham", [False, True])
def test_fundus_spec_records_the_preprocessing_it_was_built_for(ben_graham: bool) -> None:
    spec = create_model("fundus_cnn", architecture="resnet10t", image_size=SIZE, ben_graham=ben_graham).spec
    assert spec.preprocessing == Preprocessing.for_modality(Modality.FUNDUS, SIZE, ben_graham=ben_graham)
    assert (spec.image_size, spec.field_crop, spec.ben_graham) == (SIZE, True, ben_graham)


def test_oct_spec_is_resized_only() -> None:
    spec = create_model("oct_cnn", architecture="resnet10t", image_size=SIZE).spec
    assert spec.preprocessing == Preprocessing(Modality.OCT, SIZE, field_crop=False, ben_graham=False)


def test_spec_round_trips_through_json_with_its_preprocessing() -> None:
    spec = create_model("fundus_cnn", architecture="resnet10t", image_size=SIZE, ben_graham=True).spec
    stored = json.loads(json.dumps(spec.to_dict()))
    assert {"image_size", "field_crop", "ben_graham", "mean", "std", "in_chans"} <= stored.keys()
    again = ModelSpec.from_dict(stored)
    assert again == spec and again.preprocessing.fingerprint == spec.preprocessing.fingerprint


@pytest.mark.parametrize(("modality", "crop"), [(Modality.FUNDUS, True), (Modality.OCT, False)])
def test_spec_stored_before_the_preprocessing_fields_still_loads(modality: Modality, crop: bool) -> None:
    """The spec.json of older versions: ``input_size``, no field crop or Ben Graham."""
    name = "fundus_cnn" if modality is Modality.FUNDUS else "oct_cnn"
    current = create_model(name, architecture="resnet10t", image_size=SIZE).spec.to_dict()
    old = {k: v for k, v in current.items() if k not in ("image_size", "field_crop", "ben_graham")}
    spec = ModelSpec.from_dict({**old, "input_size": SIZE})
    assert (spec.image_size, spec.field_crop, spec.ben_graham) == (SIZE, crop, False)
