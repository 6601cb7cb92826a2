"""The drift section of the run report and the artifact markdown, from a check's data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from retina_core.domain import Modality
from retina_core.drift.check import apply_holm, feature_tests
from retina_core.drift.policy import decide_retrain
from retina_core.drift.result import DriftReport, ModalityDrift
from retina_core.reporting import ReportData, write_report
from retina_core.reporting.drift import drift_markdown


def _report() -> DriftReport:
    rng = np.random.default_rng(0)
    reference = rng.normal(100, 10, size=(200, 5))
    new = rng.normal(100, 10, size=(80, 5))
    new[:, 3] -= 15  # blurrier: sharpness down 1.5 SD
    raw = ModalityDrift(
        modality=Modality.FUNDUS,
        champion="fundus_cnn v1",
        n_reference=200,
        n_new=80,
        features=feature_tests(reference, new),
    )
    modalities, n_tests = apply_holm([raw], 0.05, 0.2)
    return DriftReport(
        check_id="20260101T000000-abc123",
        created_at=datetime.now(UTC),
        dataset_version=3,
        alpha=0.05,
        min_effect=0.2,
        n_tests=n_tests,
        modalities=modalities,
    )


def test_the_report_says_why_it_retrained_and_plots_the_drifting_feature(tmp_path: Path) -> None:
    report = _report()
    assert report.modalities[0].drifting_names() == ["sharpness"]
    decision = decide_retrain(80, 100, drifted=report.drifted, drift_summary=report.summary())
    data = ReportData(run_id="r1", created_at=datetime.now(UTC), drift=report, retrain=decision)
    html = write_report(data, tmp_path).read_text()
    section = html[html.index('<section id="drift">') : html.index('<section id="data">')]
    assert "rule(s) fired: <strong>drift</strong>" in section
    assert "drift detected" in section and report.check_id in section
    assert section.count('<img src="data:image/png;base64,') == 1  # the one drifting feature
    assert ReportData.from_json((tmp_path / "report.json").read_text()) == data


def test_a_report_without_a_check_says_so(tmp_path: Path) -> None:
    html = write_report(ReportData(run_id="r2", created_at=datetime.now(UTC)), tmp_path).read_text()
    assert "Drift check: not run" in html


def test_the_artifact_markdown_has_the_verdict_and_every_test() -> None:
    report = _report()
    text = drift_markdown(report)
    assert "**Drift detected**" in text and "Holm over 5 tests" in text
    assert text.count("| fundus |") == 5
