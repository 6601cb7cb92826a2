from __future__ import annotations

import numpy as np
import pytest

from retina_core.domain import Modality, OctClass
from retina_core.evaluation.aggregate import aggregate_by_patient
from retina_core.evaluation.task_spec import TaskSpec

# OCT order: CNV, DME, DRUSEN, NORMAL
OCT = TaskSpec.for_modality(Modality.OCT)
PIDS = np.array(["p2", "p1", "p2", "p1", "p3"])
PROBS = np.array(
    [
        [0.1, 0.1, 0.1, 0.7],  # p2 scan a: disease 0.3
        [0.6, 0.1, 0.1, 0.2],  # p1 scan a: disease 0.8
        [0.1, 0.5, 0.2, 0.2],  # p2 scan b: disease 0.8
        [0.0, 0.0, 0.1, 0.9],  # p1 scan b: disease 0.1
        [0.2, 0.2, 0.2, 0.4],  # p3 only scan
    ]
)
Y = np.array([OctClass.NORMAL, OctClass.CNV, OctClass.DRUSEN, OctClass.NORMAL, OctClass.DME])


def test_mean_averages_probability_vectors() -> None:
    ids, probs, y = aggregate_by_patient(PIDS, PROBS, Y, "mean", normal_class=3, severity=OCT.severity_order)
    assert ids.tolist() == ["p1", "p2", "p3"]
    np.testing.assert_allclose(probs[0], [0.3, 0.05, 0.1, 0.55])
    np.testing.assert_allclose(probs[1], [0.1, 0.3, 0.15, 0.45])
    np.testing.assert_allclose(probs[2], PROBS[4])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert y.tolist() == [OctClass.CNV, OctClass.DRUSEN, OctClass.DME]


def test_max_keeps_the_sickest_scan() -> None:
    ids, probs, _ = aggregate_by_patient(PIDS, PROBS, Y, "max", normal_class=3, severity=OCT.severity_order)
    assert ids.tolist() == ["p1", "p2", "p3"]
    np.testing.assert_allclose(probs[0], PROBS[1])
    np.testing.assert_allclose(probs[1], PROBS[2])
    np.testing.assert_allclose(probs[2], PROBS[4])


def test_worst_label_follows_severity_not_index() -> None:
    pids = np.array([1, 1, 1])
    probs = np.full((3, 4), 0.25)
    labels = np.array([OctClass.DRUSEN, OctClass.CNV, OctClass.NORMAL])
    _, _, y = aggregate_by_patient(pids, probs, labels, "mean", normal_class=3, severity=OCT.severity_order)
    assert y.tolist() == [OctClass.CNV]
    # DR grades: index order, the highest grade wins
    _, _, grade = aggregate_by_patient(pids, np.full((3, 5), 0.2), np.array([0, 3, 1]), "max")
    assert grade.tolist() == [3]


def test_one_scan_per_patient_is_unchanged() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), 20)
    y = rng.integers(0, 5, 20)
    ids = np.arange(20)[::-1]
    for how in ("mean", "max"):
        out_ids, out_probs, out_y = aggregate_by_patient(ids, probs, y, how)
        np.testing.assert_array_equal(out_ids, np.arange(20))
        np.testing.assert_allclose(out_probs, probs[::-1])
        np.testing.assert_array_equal(out_y, y[::-1])


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="how"):
        aggregate_by_patient(PIDS, PROBS, Y, "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="severity"):
        aggregate_by_patient(PIDS, PROBS, Y, severity=(0, 1, 2))
