"""A realistic report built from real evaluation outputs on random predictions.

No metric value is typed by hand: every number comes out of ``evaluate_predictions``,
``evaluate_binary`` or ``paired_bootstrap_diff``, so the tests check that the report shows
what the evaluation computed rather than what a fixture author expected.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from retina_core.config import EvalSettings
from retina_core.domain import Modality, Split
from retina_core.evaluation import (
    BinaryResult,
    EvaluationResult,
    TaskSpec,
    evaluate_binary,
    evaluate_predictions,
    paired_bootstrap_diff,
)
from retina_core.evaluation.calibration import softmax
from retina_core.evaluation.metrics import weighted_roc_auc
from retina_core.reporting import (
    ComparisonRow,
    DataSummary,
    ExplainSection,
    GalleryItem,
    ModelSection,
    PointingRow,
    RegistryDecision,
    ReportData,
    TrainingCurves,
    build_model_card,
    count_classes,
    road_rows,
)
from tests.reporting.helpers import GALLERY

SETTINGS = EvalSettings(bootstrap=50, seed=0, ece_bins=10)


def _logits(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """A decent, overconfident classifier: true-class signal plus noise, scaled up."""
    return 2.5 * (rng.normal(size=(y.size, k)) + 1.2 * np.eye(k)[y])


def _evaluate(modality: Modality, n_patients: int, seed: int) -> EvaluationResult:
    task = TaskSpec.for_modality(modality)
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, 3, n_patients)
    patient_ids = np.repeat([f"{modality}-{i}" for i in range(n_patients)], per_patient)
    y = np.repeat(rng.integers(0, task.num_classes, n_patients), per_patient)
    val_y = rng.integers(0, task.num_classes, 60)
    return evaluate_predictions(
        task,
        y,
        softmax(_logits(y, task.num_classes, rng)),
        patient_ids,
        val_logits=_logits(val_y, task.num_classes, rng),
        val_y=val_y,
        settings=SETTINGS,
    )


@pytest.fixture(scope="session")
def fundus_result() -> EvaluationResult:
    return _evaluate(Modality.FUNDUS, 40, seed=1)


@pytest.fixture(scope="session")
def oct_result() -> EvaluationResult:
    return _evaluate(Modality.OCT, 30, seed=2)


@pytest.fixture(scope="session")
def screening() -> dict[str, BinaryResult | ComparisonRow]:
    """Binary results of each input combination on the same virtual pairs, plus paired gains."""
    rng = np.random.default_rng(3)
    n = 60
    y = rng.integers(0, 2, n)
    patients = np.array([f"pair-{i}" for i in range(n)])
    noise = {name: rng.normal(size=n) for name in ("fundus", "oct", "shuffled")}
    scores = {
        "fundus-only": 1 / (1 + np.exp(-(1.2 * (2 * y - 1) + noise["fundus"]))),
        "OCT-only": 1 / (1 + np.exp(-(1.0 * (2 * y - 1) + noise["oct"]))),
    }
    scores["concat-MLP fusion"] = 1 / (
        1 + np.exp(-(2.0 * (2 * y - 1) + 0.7 * (noise["fundus"] + noise["oct"])))
    )
    scores["shuffled-pair control"] = 1 / (1 + np.exp(-(1.2 * (2 * y - 1) + noise["shuffled"])))
    results = {name: evaluate_binary(y, s, patients, SETTINGS) for name, s in scores.items()}
    best_single = max(("fundus-only", "OCT-only"), key=lambda name: results[name].auc.value)
    rows: dict[str, BinaryResult | ComparisonRow] = dict(results)
    for name, result in results.items():
        gain = None
        if name not in ("fundus-only", "OCT-only"):
            gain = paired_bootstrap_diff(
                weighted_roc_auc, y, scores[name], scores[best_single], patients, n_boot=SETTINGS.bootstrap
            )
        rows[f"row:{name}"] = ComparisonRow(
            name=name,
            auc=result.auc,
            sensitivity=result.sensitivity,
            specificity=result.specificity,
            n=result.n,
            gain_vs_best_single=gain,
        )
    # only diseased eyes have both images here: AUC is undefined, which the report must say
    only_disease = evaluate_binary(np.ones(20, int), rng.uniform(size=20), patients[:20], SETTINGS)
    rows["undefined"] = ComparisonRow(
        name="both (diseased only)", auc=only_disease.auc, sensitivity=only_disease.sensitivity, n=20
    )
    return rows


def _data_summary() -> DataSummary:
    rng = np.random.default_rng(4)
    records = [
        (modality, split, int(label))
        for modality, k, n in ((Modality.FUNDUS, 5, 120), (Modality.OCT, 4, 90))
        for split, label in zip(rng.choice(list(Split), n), rng.integers(0, k, n), strict=True)
    ]
    return DataSummary(
        counts=count_classes(records),
        quarantined={"unreadable image": 2, "too small": 1},
        pairing="virtual",
        n_pairs=60,
    )


def _curves(seed: int, metric: str) -> TrainingCurves:
    rng = np.random.default_rng(seed)
    epochs = 5
    return TrainingCurves(
        train_loss=list(np.linspace(1.6, 0.6, epochs) + rng.uniform(0, 0.05, epochs)),
        val_loss=list(np.linspace(1.7, 0.9, epochs) + rng.uniform(0, 0.05, epochs)),
        val_metric=list(np.linspace(0.2, 0.6, epochs)),
        val_metric_name=metric,
    )


def _model(
    name: str,
    result: EvaluationResult,
    modality: Modality,
    summary: DataSummary,
    registry: RegistryDecision | None,
) -> ModelSection:
    spec = {
        "name": name,
        "modality": str(modality),
        "architecture": "resnet18",
        "image_size": 64,
        "in_chans": 3 if modality is Modality.FUNDUS else 1,
        "mean": [0.5] * (3 if modality is Modality.FUNDUS else 1),
        "std": [0.25] * (3 if modality is Modality.FUNDUS else 1),
        "label_names": result.label_names,
    }
    card = build_model_card(
        result, spec, summary.split_counts(modality), version="3", dataset_version="dv-7", synthetic=True
    )
    return ModelSection(
        name=name,
        version="3",
        architecture="resnet18",
        image_size=64,
        evaluation=result,
        curves=_curves(len(name), result.primary_metric),
        registry=registry,
        model_card=card,
    )


@pytest.fixture(scope="session")
def report_data(fundus_result: EvaluationResult, oct_result: EvaluationResult, screening: dict) -> ReportData:
    summary = _data_summary()
    fundus_decision = RegistryDecision(
        status="champion",
        metric=fundus_result.primary_metric,
        candidate=fundus_result.primary,
        champion_version="2",
        champion=oct_result.primary,
        margin=0.01,
        reason="candidate beats champion by more than the margin",
    )
    fusion_result = screening["concat-MLP fusion"]
    fusion_card = build_model_card(
        fusion_result,
        {"name": "fusion_head", "architecture": "concat_mlp", "modality": "fundus+oct embeddings"},
        {"train": {"normal": 30, "disease": 30}},
        version="1",
        dataset_version="dv-7",
        synthetic=True,
        pairing="virtual",
    )
    rng = np.random.default_rng(5)
    road_labels = list(rng.choice(["Mild", "Moderate", "Severe"], 12))
    explanations = [
        ExplainSection(
            model="fundus_cnn",
            method="gradcam",
            pointing=[
                PointingRow(
                    label=label,
                    n=n,
                    n_excluded=1,
                    hit_rate=float(rng.uniform()),
                    energy=float(rng.uniform()),
                    random_hit_rate=float(rng.uniform()),
                    random_energy=float(rng.uniform()),
                )
                for label, n in (("Mild", 4), ("Moderate", 5), ("all", 9))
            ],
            road=road_rows(road_labels, rng.normal(size=12), rng.normal(size=12)),
            gallery=[
                GalleryItem(
                    path=path,
                    caption=f"example {i}",
                    true_label="Moderate",
                    predicted_label="Mild" if i else "Moderate",
                    confidence=float(rng.uniform(0.4, 1.0)),
                    kind="misclassified" if i else "correct",
                )
                for i, path in enumerate(GALLERY)
            ],
        ),
        ExplainSection(model="oct_cnn", method="gradcam"),
    ]
    return ReportData(
        run_id="run-2024-test",
        created_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        dataset_version="dv-7",
        synthetic=True,
        data_summary=summary,
        models=[
            _model("fundus_cnn", fundus_result, Modality.FUNDUS, summary, fundus_decision),
            _model("oct_cnn", oct_result, Modality.OCT, summary, None),
            ModelSection(
                name="fusion_head",
                version="1",
                architecture="concat_mlp",
                evaluation=fusion_result,
                model_card=fusion_card,
            ),
        ],
        fusion_comparison=[
            screening[f"row:{name}"]
            for name in ("fundus-only", "OCT-only", "concat-MLP fusion", "shuffled-pair control")
        ],
        missing_modality=[screening["row:fundus-only"], screening["row:OCT-only"], screening["undefined"]],
        explanations=explanations,
        notes=["synthetic data", "virtual pairs"],
    )
