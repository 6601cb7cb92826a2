"""The champion is re-measured on today's test split only when today's inputs are the ones it was trained on."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from retina_core.catalog.registry import get_version
from retina_core.data.synthetic import SynthSpec
from retina_core.domain import Modality
from retina_core.models import RetinaClassifier
from retina_core.training import run
from retina_core.training.run import train_modality
from tests.fusion.world import build_world


def test_a_champion_trained_on_other_preprocessing_is_judged_on_its_registered_figure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluated: list[int] = []  # input sizes of every model evaluation: the candidate's, then a champion's
    real_eval = run._predict_eval

    def counting(model: RetinaClassifier, *args: Any, **kwargs: Any) -> Any:
        evaluated.append(model.spec.image_size)
        return real_eval(model, *args, **kwargs)

    monkeypatch.setattr(run, "_predict_eval", counting)
    world = build_world(tmp_path, SynthSpec(fundus=40, oct=0, pairs=0, size=64, seed=2), train=False)
    fundus = world.settings.train.fundus
    fundus.epochs, fundus.image_size = 1, 32
    first = train_modality(world.settings, Modality.FUNDUS, engine=world.engine, store=world.store)
    assert first.status == "champion" and fundus.ben_graham

    fundus.seed = 1  # a second recipe on the same inputs: the champion is re-measured beside it
    evaluated.clear()
    second = train_modality(world.settings, Modality.FUNDUS, engine=world.engine, store=world.store)
    assert second.decision is not None and second.decision.champion_version == first.version
    assert len(evaluated) == 2

    fundus.ben_graham = False  # today's arrays are raw photos; the champion was trained on normalised ones
    evaluated.clear()
    with caplog.at_level(logging.INFO, logger="retina_core.training.run"):
        third = train_modality(world.settings, Modality.FUNDUS, engine=world.engine, store=world.store)
    assert third.decision is not None
    champion_version = third.decision.champion_version
    assert champion_version is not None
    assert (
        third.decision.champion_value
        == get_version(world.engine, "fundus_cnn", champion_version).primary_value
    )
    assert len(evaluated) == 1  # the candidate only
    assert "trained on other inputs" in caplog.text and "trained on other inputs" in third.decision.reason
