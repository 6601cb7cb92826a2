"""The report shows the modality share with its check, and Integrated Gradients beside the CAM method."""

from __future__ import annotations

from pathlib import Path

from retina_core.reporting import ReportData, write_report
from retina_core.reporting.data import MethodScores
from retina_core.reporting.format import NOT_RUN, format_number
from retina_core.reporting.modality_share import ModalityShareSummary, ShareCheck
from tests.reporting.helpers import Page


def test_share_and_its_check_are_in_the_fusion_section(report_data: ReportData, tmp_path: Path) -> None:
    share = ModalityShareSummary(
        n_test=80,
        mean_fundus_share=0.62,
        mean_fundus_share_diseased=0.58,
        occlusion_agreement=0.51,
        baseline_occlusion_agreement=0.81,
        max_completeness_error=0.0004,
        checks=[
            ShareCheck(
                source="recombined",
                n=40,
                n_fundus_diseased=22,
                n_oct_diseased=18,
                diseased_larger={"value": 0.85, "low": 0.72, "high": 0.95, "n_units": 30},
                mean_diseased_share=0.74,
                occlusion_diseased_larger=0.55,
                baseline_occlusion_diseased_larger=0.7,
            )
        ],
    )
    data = report_data.model_copy(
        update={"models": [], "fusion_comparison": None, "missing_modality": None, "modality_share": share}
    )
    page = Page(write_report(data, tmp_path / "with").read_text(encoding="utf-8"))
    assert "0.620 of the fused disease margin" in page.text["modality-share"]
    cells = page.row("modality-share-check", "test images recombined")
    assert cells[1:] == ["40", "22", "18", "0.850 [0.720, 0.950]", "0.740", "0.700", "0.550"]

    without = data.model_copy(update={"modality_share": None})
    page = Page(write_report(without, tmp_path / "without").read_text(encoding="utf-8"))
    assert NOT_RUN in page.text["modality-share"]


def test_integrated_gradients_sit_beside_the_cam_method(report_data: ReportData, tmp_path: Path) -> None:
    assert report_data.explanations is not None
    cam = report_data.explanations[0]
    assert cam.pointing is not None and cam.road is not None
    ig_pointing = [p.model_copy(update={"hit_rate": 0.9}) for p in cam.pointing]
    ig_road = [r.model_copy(update={"cam_score": 0.4}) for r in cam.road]
    section = cam.model_copy(
        update={
            "compared": [MethodScores(method="integrated_gradients", pointing=ig_pointing, road=ig_road)],
            "gallery_method": "integrated_gradients",
        }
    )
    data = report_data.model_copy(
        update={"models": [], "fusion_comparison": None, "missing_modality": None, "explanations": [section]}
    )
    page = Page(write_report(data, tmp_path).read_text(encoding="utf-8"))
    table = f"explain-{cam.model}-methods"
    cam_all = next(p for p in cam.pointing if p.label == "all")
    cam_road = next(r for r in cam.road if r.label == "all")
    assert page.row(table, cam.method)[1:3] == [
        format_number(cam_all.hit_rate),
        format_number(cam_all.random_hit_rate),
    ]
    ig = page.row(table, "integrated_gradients")
    assert ig[1] == "0.900" and ig[2] == format_number(cam_all.random_hit_rate)  # the same random maps
    assert ig[5:] == ["0.400", format_number(cam_road.random_score)]
    assert page.row(f"explain-{cam.model}-pointing-integrated_gradients", "all")[3] == "0.900"
