"""OCT volumes at eye level: pooling rules, evaluation with CIs by patient, driving B-scans."""

from __future__ import annotations

import numpy as np
import pytest

from retina_core.config import EvalSettings
from retina_core.evaluation.volume import evaluate_volumes, predict_volume, top_k, volume_scores
from retina_core.explain.stage import TestPredictions as Predictions
from retina_core.explain.stage import volume_driver_picks


def test_rules_and_the_driving_b_scan() -> None:
    focal = np.array([0.05] * 18 + [0.9, 0.8])  # a lesion on 2 of 20 B-scans
    assert top_k(20) == 2 and top_k(5) == 1 and top_k(128) == 13
    scores = volume_scores(focal)
    assert scores["max"] == pytest.approx(0.9)
    assert scores["mean"] == pytest.approx((18 * 0.05 + 1.7) / 20)
    assert scores["top_decile_mean"] == pytest.approx(0.85)  # keeps the lesion the mean dilutes
    spike = volume_scores(np.array([0.05] * 19 + [0.95]))  # one spurious scan
    assert spike["top_decile_mean"] == pytest.approx(0.5)  # needs a second scan to agree
    assert spike["max"] == pytest.approx(0.95)
    prediction = predict_volume(focal)
    assert prediction.driving_b_scan == 18 and prediction.disease_probability == pytest.approx(0.85)
    with pytest.raises(ValueError):
        volume_scores(np.array([]))


def _volumes(rng: np.random.Generator, n_patients: int, b_scans: int = 10):
    """Two eyes per patient; a diseased eye shows its lesion on 2 of its B-scans only."""
    volume_ids, patients, disease, labels = [], [], [], []
    for p in range(n_patients):
        for eye in ("OD", "OS"):
            sick = bool(rng.random() < 0.5)
            probs = rng.uniform(0.0, 0.4, b_scans)
            if sick:
                probs[rng.choice(b_scans, 2, replace=False)] = rng.uniform(0.6, 1.0, 2)
            volume_ids += [f"v{p}{eye}"] * b_scans
            patients += [f"p{p}"] * b_scans
            disease += probs.tolist()
            labels += [sick] * b_scans  # a DICOM label is per volume
    return np.array(volume_ids), np.array(patients), np.array(disease), np.array(labels)


def test_eye_level_evaluation_counts_volumes_and_resamples_patients() -> None:
    rng = np.random.default_rng(0)
    volume_ids, patients, disease, labels = _volumes(rng, 30)
    val = dict(zip(("volume_ids", "patient_ids", "disease", "y_disease"), _volumes(rng, 20), strict=True))
    result = evaluate_volumes(
        volume_ids, patients, disease, labels, EvalSettings(bootstrap=100), validation=val
    )
    assert (result.n_volumes, result.n_b_scans, result.n_patients) == (60, 600, 30)
    assert set(result.rules) == {"max", "mean", "top_decile_mean"}
    for rule in result.rules.values():
        assert rule.n == 60 and rule.n_patients == 30 and rule.youden_source == "validation"
        assert rule.auc.low <= rule.auc.value <= rule.auc.high
    # a volume label on every B-scan makes the healthy B-scans of a sick eye look like misses;
    # pooled per eye, max and the decision rule separate the eyes (the mean dilutes the lesion)
    assert result.rules["max"].auc.value == pytest.approx(1.0)
    assert result.rules["top_decile_mean"].auc.value == pytest.approx(1.0)
    assert result.b_scan.auc.value < 0.8 and result.b_scan.n == 600


def test_gallery_shows_the_b_scan_that_drove_each_top_volume() -> None:
    probs = np.array([[0.1, 0, 0, 0.9], [0.7, 0, 0, 0.3], [0.2, 0, 0, 0.8], [0.05, 0, 0, 0.95]])
    preds = Predictions(
        images=np.zeros((4, 8, 8), np.uint8),
        labels=np.array([3, 0, 0, 3]),
        probs=probs,
        shas=["a", "b", "c", "d"],
        object_keys=["a", "b", "c", "d"],
        volumes=[("v1", 0), ("v1", 1), ("v2", 0), None],
    )
    assert volume_driver_picks(preds, normal_class=3, count=4) == [(1, "volume-driver"), (2, "volume-driver")]
    assert volume_driver_picks(preds, normal_class=3, count=1) == [(1, "volume-driver")]
    assert volume_driver_picks(Predictions(**{**preds.__dict__, "volumes": None}), 3, 4) == []
