from __future__ import annotations

import math

from retina_core.evaluation import BinaryResult, EvaluationResult
from retina_core.reporting import ModelCard, build_model_card
from retina_core.reporting.format import format_estimate
from retina_core.reporting.model_card import INTENDED_USE, SINGLE_SITE, SYNTHETIC, VIRTUAL_PAIRS

SPEC = {
    "name": "oct_cnn",
    "modality": "oct",
    "architecture": "resnet18",
    "image_size": 64,
    "in_chans": 1,
    "mean": (0.5,),
    "std": (0.25,),
    "label_names": ("CNV", "DME", "DRUSEN", "NORMAL"),
    "embedding_dim": 512,
}
BALANCED = {
    "train": {"CNV": 10, "DME": 9, "DRUSEN": 8, "NORMAL": 10},
    "test": {"CNV": 3, "DME": 3, "DRUSEN": 2, "NORMAL": 3},
}


def test_card_carries_the_evaluations_numbers(oct_result: EvaluationResult) -> None:
    card = build_model_card(oct_result, SPEC, BALANCED, version="4", dataset_version="dv-2")
    by_key = {(m.name, m.level): m.estimate for m in card.metrics}
    assert by_key[("macro_f1", "image")] == oct_result.image_level.macro_f1
    assert by_key[("disease_auc", "patient")] == oct_result.patient_level.disease_auc
    assert ("qwk", "image") not in by_key, "QWK is for ordinal tasks only"
    assert card.per_class == list(oct_result.image_level.per_class)
    assert card.calibration is not None
    assert card.calibration.temperature == oct_result.calibration.temperature
    assert card.input.image_size == 64 and card.input.channels == 1 and card.input.mean == [0.5]
    assert card.primary_metric == "macro_f1"


def test_markdown_states_intended_use_limitations_and_metrics(oct_result: EvaluationResult) -> None:
    card = build_model_card(oct_result, SPEC, BALANCED, version="4", dataset_version="dv-2")
    text = card.to_markdown()
    assert text.startswith("# Model card: oct_cnn v4")
    assert "## Intended use" in text and INTENDED_USE in text and "not for diagnosis" in text.lower()
    assert "## Limitations" in text and f"- {SINGLE_SITE}" in text
    assert f"| Macro-F1 | image | {format_estimate(oct_result.image_level.macro_f1)} |" in text
    assert "| DRUSEN | 8 | 2 |" in text


def test_limitations_follow_the_runs_facts(oct_result: EvaluationResult) -> None:
    plain = build_model_card(oct_result, SPEC, BALANCED, version="1", dataset_version=None)
    assert plain.limitations == [SINGLE_SITE]
    imbalanced = {"train": {"CNV": 40, "DME": 5, "DRUSEN": 9, "NORMAL": 30}}
    flagged = build_model_card(
        oct_result, SPEC, imbalanced, version="1", dataset_version=None, synthetic=True
    )
    assert flagged.limitations[0] == SYNTHETIC
    assert any("40 'CNV'" in item and "5 'DME'" in item and "8.0:1" in item for item in flagged.limitations)


def test_fusion_head_card_from_a_binary_result(screening: dict) -> None:
    result: BinaryResult = screening["concat-MLP fusion"]
    card = build_model_card(
        result,
        {"name": "fusion_head", "architecture": "concat_mlp"},
        {},
        version="2",
        dataset_version="dv-2",
        pairing="virtual",
        extra_limitations=["Head trained for 20 epochs only."],
    )
    assert VIRTUAL_PAIRS in card.limitations and card.limitations[-1] == "Head trained for 20 epochs only."
    assert {m.name: m.estimate for m in card.metrics}["auc"] == result.auc
    assert card.calibration is not None and card.calibration.ece_before == result.ece
    assert card.calibration.temperature is None
    text = card.to_markdown()
    assert "Counts: not recorded" in text and "ECE after temperature scaling: not fitted" in text


def test_card_round_trips_through_json_with_undefined_values(screening: dict) -> None:
    undefined_auc = screening["undefined"].auc
    assert math.isnan(undefined_auc.value)
    card = build_model_card(
        screening["OCT-only"], {"name": "oct_only"}, {}, version="1", dataset_version=None
    )
    card = card.model_copy(
        update={"metrics": [*card.metrics, card.metrics[0].model_copy(update={"estimate": undefined_auc})]}
    )
    again = ModelCard.model_validate_json(card.model_dump_json())
    assert math.isnan(again.metrics[-1].estimate.value)
    assert again.to_markdown() == card.to_markdown()
    assert "n/a (undefined on this data)" in again.to_markdown()
