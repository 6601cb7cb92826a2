"""Inference helpers live beside the model: the cache a spec names, and no training imported for them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from retina_core.config import Settings
from retina_core.data.image_cache import PreprocessedCache
from retina_core.domain import Modality
from retina_core.models import create_model
from retina_core.models.architectures import model_for_modality
from retina_core.models.inference import cache_for
from retina_core.storage import LocalObjectStore
from retina_core.training.data import preprocessing_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("modality", list(Modality))
def test_a_trained_model_reads_the_cache_its_training_filled(tmp_path: Path, modality: Modality) -> None:
    """What train_modality caches and what the model it registers asks for later are one cache."""
    ms = Settings(home=tmp_path).train_for(modality)
    options = {"ben_graham": ms.ben_graham} if modality is Modality.FUNDUS else {}
    spec = create_model(model_for_modality(modality), architecture="resnet10t", image_size=32, **options).spec
    store = LocalObjectStore(tmp_path / "store")
    trained_on = PreprocessedCache(
        store, preprocessing_for(modality, ms.model_copy(update={"image_size": 32}))
    )
    assert cache_for(store, spec).prefix == trained_on.prefix


def test_a_ben_graham_model_and_a_plain_one_never_share_a_cache(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    plain, normalised = (
        create_model("fundus_cnn", architecture="resnet10t", image_size=32, ben_graham=bg).spec
        for bg in (False, True)
    )
    assert cache_for(store, plain).prefix != cache_for(store, normalised).prefix


def test_prediction_embedding_and_explanation_import_no_training() -> None:
    modules = [
        "retina_core.predict",
        "retina_core.fusion.embed",
        "retina_core.fusion.train",
        "retina_core.explain.stage",
    ]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\n" + (
        "print(sorted(m for m in sys.modules if m.startswith('retina_core.training')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
