from __future__ import annotations

import math

import pytest

from retina_core.domain import Modality, Split
from retina_core.evaluation import EvaluationResult
from retina_core.reporting import DataSummary, ModelSection, count_classes, pointing_rows, road_rows


def test_count_classes_names_labels_and_fills_missing_cells() -> None:
    records = [
        ("fundus", "train", 0),
        ("fundus", "train", 0),
        (Modality.FUNDUS, Split.TEST, 4),
        ("oct", "val", 3),
    ]
    counts = count_classes(records)
    assert [(c.modality, c.split, c.label_name, c.count) for c in counts] == [
        (Modality.FUNDUS, Split.TRAIN, "No DR", 2),
        (Modality.FUNDUS, Split.TEST, "Proliferative", 1),
        (Modality.OCT, Split.VAL, "NORMAL", 1),
    ]
    summary = DataSummary(counts=counts)
    assert summary.modalities() == [Modality.FUNDUS, Modality.OCT]
    assert summary.split_counts(Modality.FUNDUS)["train"] == {
        "No DR": 2,
        "Mild": 0,
        "Moderate": 0,
        "Severe": 0,
        "Proliferative": 0,
    }
    assert summary.split_totals(Modality.OCT) == {Split.TRAIN: 0, Split.VAL: 1, Split.TEST: 0}


def test_model_section_takes_its_headline_from_the_evaluation(
    fundus_result: EvaluationResult, screening: dict
) -> None:
    graded = ModelSection(name="fundus_cnn", version="1", architecture="resnet18", evaluation=fundus_result)
    assert (graded.primary_metric, graded.primary) == ("qwk", fundus_result.primary)
    fused = ModelSection(
        name="fusion_head", version="1", architecture="mlp", evaluation=screening["concat-MLP fusion"]
    )
    assert (fused.primary_metric, fused.primary) == ("auc", screening["concat-MLP fusion"].auc)
    skipped = ModelSection(name="oct_cnn", version="1", architecture="resnet18")
    assert skipped.primary is None and skipped.primary_metric is None


def test_road_rows_are_per_class_means_then_all() -> None:
    rows = road_rows(["CNV", "DME", "CNV"], [0.1, 0.3, 0.5], [0.0, 0.0, 0.3])
    assert [(r.label, r.n) for r in rows] == [("CNV", 2), ("DME", 1), ("all", 3)]
    assert rows[0].cam_score == pytest.approx(0.3) and rows[2].random_score == pytest.approx(0.1)
    empty = road_rows([], [], [])
    assert empty[0].label == "all" and empty[0].n == 0 and math.isnan(empty[0].cam_score)
    with pytest.raises(ValueError, match="one entry per image"):
        road_rows(["CNV"], [0.1, 0.2], [0.0])


def test_pointing_rows_accept_summaries_and_dicts() -> None:
    class Summary:
        def to_dict(self) -> dict[str, object]:
            return {
                "label": "all",
                "n": 3,
                "n_excluded": 1,
                "hit_rate": 1.0,
                "energy": 0.5,
                "random_hit_rate": 0.3,
                "random_energy": 0.2,
            }

    rows = pointing_rows([Summary(), Summary().to_dict()])
    assert rows[0] == rows[1] and rows[0].n_excluded == 1
