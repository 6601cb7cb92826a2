"""The fusion section reports the modality share and its complementary-set check."""

from __future__ import annotations

from pathlib import Path

from retina_core.reporting import ReportData, write_report
from retina_core.reporting.format import NOT_RUN
from retina_core.reporting.modality_share import ModalityShareSummary, ShareCheck
from tests.reporting.helpers import Page


def test_share_and_its_check_are_in_the_fusion_section(report_data: ReportData, tmp_path: Path) -> None:
    share = ModalityShareSummary(
        n_test=80,
        mean_fundus_share=0.62,
        mean_fundus_share_diseased=0.58,
        occlusion_agreement=0.81,
        max_completeness_error=0.0004,
        checks=[
            ShareCheck(
                source="recombined",
                n=40,
                n_fundus_diseased=22,
                n_oct_diseased=18,
                diseased_larger={"value": 0.85, "low": 0.72, "high": 0.95, "n_units": 30},
                mean_diseased_share=0.74,
                occlusion_diseased_larger=0.7,
            )
        ],
    )
    data = report_data.model_copy(
        update={"models": [], "fusion_comparison": None, "missing_modality": None, "modality_share": share}
    )
    page = Page(write_report(data, tmp_path / "with").read_text(encoding="utf-8"))
    assert "0.620 of the fused disease margin" in page.text["modality-share"]
    cells = page.row("modality-share-check", "test images recombined")
    assert cells[1:] == ["40", "22", "18", "0.850 [0.720, 0.950]", "0.740", "0.700"]

    without = data.model_copy(update={"modality_share": None})
    page = Page(write_report(without, tmp_path / "without").read_text(encoding="utf-8"))
    assert NOT_RUN in page.text["modality-share"]
