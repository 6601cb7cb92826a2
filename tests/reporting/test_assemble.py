"""A model section of the report built from a registered version's stored spec, old or new."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from retina_core.evaluation.result import EvaluationResult
from retina_core.models import create_model
from retina_core.reporting.assemble import train_section
from retina_core.reporting.data import DataSummary
from retina_core.storage import LocalObjectStore


@pytest.mark.parametrize("stored_before_the_rename", [False, True])
def test_train_section_reads_the_image_size_from_the_stored_spec(
    tmp_path: Path, fundus_result: EvaluationResult, stored_before_the_rename: bool
) -> None:
    spec = create_model("fundus_cnn", architecture="resnet10t", image_size=48, ben_graham=True).spec.to_dict()
    if stored_before_the_rename:  # a version registered before image_size was the one name
        spec["input_size"] = spec.pop("image_size")
        del spec["field_crop"], spec["ben_graham"]
    store = LocalObjectStore(tmp_path / "store")
    store.put_bytes("models/fundus_cnn/3/spec.json", json.dumps(spec).encode())
    store.put_bytes("models/fundus_cnn/3/config.json", json.dumps({"train": {"ben_graham": True}}).encode())
    report = SimpleNamespace(
        model_name="fundus_cnn",
        version=3,
        history=[],
        evaluation=fundus_result,
        decision=None,
        modality="fundus",
        extras={},
    )
    section = train_section(report, store, DataSummary(counts=[]), synthetic=True, dataset_version=1)
    assert (section.architecture, section.image_size) == ("resnet10t", 48)
    assert section.model_card is not None and section.model_card.input.image_size == 48
