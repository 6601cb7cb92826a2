"""check_drift end to end on a real catalog, store, embedding cache and trained champions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retina_core.catalog.registry import champion
from retina_core.catalog.repository import image_versions
from retina_core.domain import Modality
from retina_core.drift import DriftReport
from retina_core.drift.check import champion_predictions, check_drift, ensure_embeddings, latest_drift_report
from retina_core.drift.sample import Images, split_reference
from retina_core.fusion.embed import catalogued_images, open_encoder
from retina_core.models.architectures import model_for_modality
from tests.drift.world import DriftWorld


@pytest.fixture(scope="module")
def unshifted(drift_world: DriftWorld) -> DriftReport:
    w = drift_world
    return check_drift(w.settings, w.engine, w.store, dataset_version=w.unshifted_version)


@pytest.fixture(scope="module")
def shifted(drift_world: DriftWorld, unshifted: DriftReport) -> DriftReport:
    w = drift_world
    return check_drift(w.settings, w.engine, w.store, dataset_version=w.shifted_version)


def test_an_unshifted_batch_is_not_flagged(unshifted: DriftReport) -> None:
    assert not unshifted.drifted, unshifted.summary()
    for m in unshifted.modalities:
        assert m.n_new == 60 and m.n_reference > 0 and m.champion is not None
        assert len(m.features) == 5 and m.embedding is not None and m.labels is not None
        assert m.watch is not None and np.isfinite(m.watch.new.value)
    assert unshifted.n_tests == 2 * (5 + 1 + 1)


def test_a_shifted_batch_is_flagged_in_features_embeddings_and_labels(shifted: DriftReport) -> None:
    assert shifted.drifted
    fundus = next(m for m in shifted.modalities if m.modality is Modality.FUNDUS)
    assert fundus.n_new == 120  # both batches landed after the champion
    # Half the new images come from the other camera and case mix: blur and field size show,
    # so do the embeddings and the labels (brightness varies too much per photo to show at n=60).
    drifting = set(fundus.drifting_names())
    assert {"sharpness", "field_fraction", "embeddings", "labels"} <= drifting, shifted.summary()
    oct_ = next(m for m in shifted.modalities if m.modality is Modality.OCT)
    assert {"sharpness", "embeddings"} <= set(oct_.drifting_names()), shifted.summary()
    payload = shifted.payload()
    assert payload["drifted"] is True and payload["modalities"]["fundus"]["drifting"]


def test_the_check_is_stored_and_read_back(drift_world: DriftWorld, shifted: DriftReport) -> None:
    latest = latest_drift_report(drift_world.store)
    assert latest is not None and latest.check_id == shifted.check_id
    assert latest == DriftReport.from_json(shifted.to_json())


def test_reference_features_are_measured_once(drift_world: DriftWorld, unshifted: DriftReport) -> None:
    stored = [i.key for i in drift_world.store.list("drift/reference/")]
    assert len(stored) == 2  # one per modality, reused by the second check


def test_champion_predictions_from_cached_embeddings_match_the_model(drift_world: DriftWorld) -> None:
    """The classifier layer over the cached embedding gives the model's own prediction."""
    w = drift_world
    current = champion(w.engine, model_for_modality(Modality.OCT))
    assert current is not None
    _, new = split_reference(image_versions(w.engine, Modality.OCT), current.data_version)
    encoder = open_encoder(w.store, current)
    rows = np.arange(20)
    embeddings = ensure_embeddings(w.settings, w.engine, w.store, encoder, new, rows)
    predicted = champion_predictions(encoder, embeddings, w.store)
    images = catalogued_images(w.engine, encoder, [new.shas[i] for i in rows])
    from retina_core.models.inference import predict_logits

    logits = predict_logits(encoder.model, images, torch.device("cpu"), amp=False)
    assert np.array_equal(predicted, logits.argmax(axis=1))
    assert isinstance(new, Images)
