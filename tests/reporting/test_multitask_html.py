"""The report's multi-task section: every row with its three metrics and CIs, escaped, or "not run"."""

from __future__ import annotations

from pathlib import Path

from retina_core.reporting import ReportData, write_report
from retina_core.reporting.format import NOT_RUN
from retina_core.results import MultiTaskReport, TaskRow
from tests.reporting.helpers import Page


def _m(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "low": low, "high": high, "n_units": 20, "n_dropped": 0}


def multitask_report(source: str = "fundus_cnn v2") -> MultiTaskReport:
    three = {
        "grade_qwk": _m(0.61, 0.4, 0.8),
        "oct_macro_f1": _m(0.7, 0.5, 0.85),
        "disease_auc": _m(0.9, 0.8, 0.97),
    }
    return MultiTaskReport(
        version=3,
        status="champion",
        reused=False,
        pairing="real",
        rows=[
            TaskRow(key="fusion", inputs="both", metrics=three),
            TaskRow(key="fusion_fundus_only", inputs="fundus", metrics=three),
            TaskRow(key="fusion_oct_only", inputs="oct", metrics=three),
            TaskRow(
                key="shuffled_control",
                inputs="both",
                metrics={k: _m(0.1, -0.1, 0.3) for k in three},
            ),
            TaskRow(
                key="fundus_cnn_own",
                inputs="fundus",
                metrics={"grade_qwk": _m(0.55, 0.3, 0.7), "disease_auc": _m(0.85, 0.7, 0.95)},
                source=source,
            ),
            TaskRow(
                key="oct_cnn_own",
                inputs="oct",
                metrics={"oct_macro_f1": _m(0.66, 0.45, 0.8), "disease_auc": _m(0.8, 0.65, 0.9)},
                source="oct_cnn v1",
            ),
        ],
    )


def test_every_row_shows_its_metrics_with_cis_and_the_encoders_own_rows_beside_the_head(
    report_data: ReportData, tmp_path: Path
) -> None:
    hostile = "<script>alert(1)</script>"
    data = report_data.model_copy(update={"multitask": multitask_report(hostile).report_section()})
    html = write_report(data, tmp_path / "with").read_text(encoding="utf-8")
    assert hostile not in html and "&lt;script&gt;" in html  # escaped, never markup
    page = Page(html)
    assert "fusion_multitask v3 (champion, real pairs)" in page.text["multitask-summary"]
    both = page.row("multitask", "Multi-task head, both embeddings")
    assert both[1:] == [
        "both",
        "fusion_multitask v3",
        "0.610 [0.400, 0.800]",
        "0.700 [0.500, 0.850]",
        "0.900 [0.800, 0.970]",
    ]
    assert page.row("multitask", "Multi-task head, fundus only")[1] == "fundus"
    assert page.row("multitask", "Multi-task head, OCT only")[1] == "oct"
    assert page.row("multitask", "Shuffled-pair control")[3] == "0.100 [-0.100, 0.300]"
    fundus = page.row("multitask", "Fundus encoder, its own prediction")
    assert fundus[1:] == ["fundus", hostile, "0.550 [0.300, 0.700]", "—", "0.850 [0.700, 0.950]"]
    oct_row = page.row("multitask", "OCT encoder, its own prediction")
    assert oct_row[2:] == ["oct_cnn v1", "—", "0.660 [0.450, 0.800]", "0.800 [0.650, 0.900]"]
    assert ReportData.from_json(data.to_json()).multitask == data.multitask  # re-renderable

    page = Page(write_report(report_data, tmp_path / "without").read_text(encoding="utf-8"))
    assert NOT_RUN in page.text["multitask"]
