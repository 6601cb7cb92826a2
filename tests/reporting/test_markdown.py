from __future__ import annotations

import json
import math

from retina_core.evaluation import BinaryResult, Estimate, EvaluationResult
from retina_core.reporting import ComparisonRow, PointingRow, RegistryDecision, ReportData
from retina_core.reporting.format import format_estimate, format_number
from retina_core.reporting.markdown import (
    fusion_comparison_table,
    metrics_rows,
    metrics_table,
    pointing_game_table,
    registry_decision_markdown,
    table,
)


def test_metrics_rows_are_json_ready_and_match_the_result(fundus_result: EvaluationResult) -> None:
    rows = metrics_rows(fundus_result)
    json.dumps(rows, allow_nan=False)
    qwk = next(r for r in rows if r["metric"] == "QWK" and r["level"] == "patient")
    estimate = fundus_result.patient_level.qwk
    assert estimate is not None
    assert (qwk["value"], qwk["ci_low"], qwk["ci_high"]) == (estimate.value, estimate.low, estimate.high)
    assert qwk["estimate"] == format_estimate(estimate) and qwk["patients"] == estimate.n_units
    assert {r["level"] for r in rows} == {"image", "patient"}


def test_metrics_rows_turn_undefined_into_null(screening: dict) -> None:
    result: BinaryResult = screening["fundus-only"]
    undefined = result.model_copy(update={"auc": Estimate(math.nan, math.nan, math.nan, result.n_patients)})
    auc = next(r for r in metrics_rows(undefined) if r["metric"] == "AUC")
    assert auc["value"] is None and auc["estimate"] == "n/a (undefined on this data)"
    json.dumps(metrics_rows(undefined), allow_nan=False)


def test_metrics_table_has_both_levels_and_calibration(fundus_result: EvaluationResult) -> None:
    text = metrics_table(fundus_result, title="fundus_cnn v3")
    image, patient = fundus_result.image_level.macro_f1, fundus_result.patient_level.macro_f1
    assert text.startswith("### fundus_cnn v3")
    assert f"| Macro-F1 | {format_estimate(image)} | {format_estimate(patient)} |" in text
    assert f"ECE {format_number(fundus_result.calibration.before.ece)} before" in text


def test_binary_metrics_table(screening: dict) -> None:
    result: BinaryResult = screening["concat-MLP fusion"]
    assert f"| AUC | {format_estimate(result.auc)} |" in metrics_table(result)


def test_fusion_and_pointing_tables(report_data: ReportData) -> None:
    rows = report_data.fusion_comparison
    assert rows is not None
    text = fusion_comparison_table(rows)
    assert len(text.splitlines()) == 2 + len(rows)
    control = next(r for r in rows if r.name == "shuffled-pair control")
    assert control.gain_vs_best_single is not None
    assert f"| shuffled-pair control | {control.n} | {format_estimate(control.auc)} |" in text
    assert fusion_comparison_table(None) == "Fusion comparison: not run."
    partial = fusion_comparison_table([ComparisonRow(name="OCT-only", auc=control.auc, n=4)])
    assert "not reported" in partial
    pointing = [
        PointingRow(label="all", n=5, hit_rate=0.6, energy=0.3, random_hit_rate=0.2, random_energy=math.nan)
    ]
    assert "| all | 5 | 0.600 | 0.200 | 0.300 | n/a (undefined on this data) |" in pointing_game_table(
        pointing
    )
    assert "not run" in pointing_game_table(None)


def test_registry_decision(fundus_result: EvaluationResult, oct_result: EvaluationResult) -> None:
    first = RegistryDecision(
        status="champion", metric="qwk", candidate=fundus_result.primary, margin=0.0, reason="first version"
    )
    assert "none (first version)" in registry_decision_markdown(first, "fundus_cnn")
    kept = RegistryDecision(
        status="candidate",
        metric="qwk",
        candidate=fundus_result.primary,
        champion_version="5",
        champion=oct_result.primary,
        margin=0.02,
        reason="does not beat the champion by the margin",
    )
    text = registry_decision_markdown(kept, "fundus_cnn")
    assert text.startswith("**fundus_cnn: candidate**")
    assert f"| Champion | v5: {format_estimate(oct_result.primary)} |" in text
    assert "| Margin required | 0.020 |" in text
    assert registry_decision_markdown(None, "oct_cnn") == "Registry decision for oct_cnn: not run."


def test_cells_are_escaped() -> None:
    assert table(["a|b"], [["x\ny|z"]]).splitlines() == ["| a\\|b |", "|---|", "| x y\\|z |"]
