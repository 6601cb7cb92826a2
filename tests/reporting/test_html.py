from __future__ import annotations

import base64
import io
import logging
import math
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from retina_core.evaluation import EvaluationResult
from retina_core.reporting import ExplainSection, GalleryItem, ModelSection, ReportData, write_report
from retina_core.reporting.format import NOT_RUN, UNDEFINED, format_estimate, format_number
from tests.reporting.helpers import GALLERY, Page, add_gallery, png_bytes

SECTIONS = ["summary", "data", "models", "fusion", "explanations", "model-cards", "notes"]
PNG_PREFIX = "data:image/png;base64,"


@pytest.fixture(scope="module")
def written(report_data: ReportData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full report, written once per module: drawing its figures is the slow part."""
    return write_report(report_data, add_gallery(tmp_path_factory.mktemp("report")))


@pytest.fixture(scope="module")
def page(written: Path) -> Page:
    return Page(written.read_text(encoding="utf-8"))


def _without_figures(data: ReportData, **update: object) -> ReportData:
    """The same report minus the sections that draw figures, for tests about something else."""
    return data.model_copy(
        update={"models": [], "fusion_comparison": None, "missing_modality": None, **update}
    )


def test_sections_appear_once_in_the_documented_order(page: Page) -> None:
    positions = [page.ids.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert all(page.ids.count(section) == 1 for section in SECTIONS)
    assert len(page.ids) == len(set(page.ids)), "every id is unique"


def test_every_image_is_an_embedded_png(page: Page) -> None:
    # fundus and OCT: confusion, ROC, reliability, curves; fusion: ROC; two forest plots; two gallery images
    assert len(page.images) == 4 + 4 + 1 + 2 + len(GALLERY)
    for src in page.images:
        assert src.startswith(PNG_PREFIX)
        with Image.open(io.BytesIO(base64.b64decode(src[len(PNG_PREFIX) :], validate=True))) as image:
            image.verify()
            assert image.format == "PNG"


def test_nothing_is_fetched_from_the_network(written: Path) -> None:
    html = written.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert "url(" not in html


def test_metrics_shown_are_the_evaluations_own(
    page: Page, fundus_result: EvaluationResult, oct_result: EvaluationResult
) -> None:
    qwk = page.metric_row("model-fundus_cnn-metrics", "qwk")
    assert qwk[1:] == [
        format_estimate(fundus_result.image_level.qwk),
        format_estimate(fundus_result.patient_level.qwk),
    ]
    assert page.text["model-fundus_cnn-primary"] == format_estimate(fundus_result.primary)
    assert page.text["model-fundus_cnn-primary"] == str(fundus_result.primary)
    auc = page.metric_row("model-oct_cnn-metrics", "disease_auc")
    assert auc[1] == format_estimate(oct_result.image_level.disease_auc)
    assert "qwk" not in [attrs.get("data-metric") for attrs, _ in page.rows["model-oct_cnn-metrics"]]
    for metrics in oct_result.image_level.per_class:
        row = page.row("model-oct_cnn-per-class", metrics.name)
        assert row[1:] == [
            str(metrics.support),
            *(format_estimate(e) for e in (metrics.precision, metrics.recall, metrics.f1)),
        ]
    calibration = fundus_result.calibration
    assert calibration.after is not None and calibration.temperature is not None
    assert page.row("model-fundus_cnn-calibration", "Before")[1] == format_number(calibration.before.ece)
    after = page.row("model-fundus_cnn-calibration", "After")
    assert after[0] == f"After (T = {format_number(calibration.temperature)})"
    assert after[1] == format_number(calibration.after.ece)


def test_fusion_section_states_pairing_and_compares_with_the_control(
    page: Page, report_data: ReportData
) -> None:
    assert "Virtual pairs" in page.text["fusion-pairing"]
    assert report_data.fusion_comparison is not None
    for row in report_data.fusion_comparison:
        cells = page.row("fusion-comparison", row.name)
        assert cells[1:3] == [str(row.n), format_estimate(row.auc)]
    control = page.row("fusion-comparison", "shuffled-pair control")
    gain = next(
        r.gain_vs_best_single for r in report_data.fusion_comparison if r.name == "shuffled-pair control"
    )
    assert gain is not None and control[5].startswith(f"{gain.value:+.3f} [")


def test_undefined_metric_reads_as_undefined_not_as_a_number(page: Page, report_data: ReportData) -> None:
    assert report_data.missing_modality is not None
    undefined = report_data.missing_modality[-1]
    assert undefined.auc is not None and math.isnan(undefined.auc.value)
    assert page.row("missing-modality", undefined.name)[2] == UNDEFINED


def test_registry_decision_and_data_counts(page: Page, report_data: ReportData) -> None:
    registry = page.text["model-fundus_cnn-registry"]
    decision = report_data.models[0].registry
    assert decision is not None and decision.status in registry and decision.reason in registry
    assert NOT_RUN in page.text["model-oct_cnn-registry"]
    summary = report_data.data_summary
    assert summary is not None
    fundus_total = sum(c.count for c in summary.counts if c.modality == "fundus")
    assert page.row("data-fundus", "all")[-1] == str(fundus_total)
    assert page.row("data-quarantine", "too small")[1] == str(summary.quarantined["too small"])


def test_explanations_show_random_baselines_and_gallery(page: Page, report_data: ReportData) -> None:
    assert report_data.explanations is not None
    pointing = report_data.explanations[0].pointing
    assert pointing is not None
    row = page.row("explain-fundus_cnn-pointing", "all")
    assert row[3:5] == [format_number(pointing[-1].hit_rate), format_number(pointing[-1].random_hit_rate)]
    assert "explain-fundus_cnn-road" in page.ids
    assert "misclassified" in page.text["explain-fundus_cnn-gallery"]
    assert NOT_RUN in page.text["explain-oct_cnn-pointing"]


class _Zooms(HTMLParser):
    """Each gallery thumbnail's link target, and the id of the figure it sits in."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[str | None] = []
        self.zooms: list[tuple[str | None, str, str]] = []  # (figure id, link target, img src)
        self._link: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        if tag == "figure":
            self.figures.append(d.get("id"))
        elif tag == "a" and d.get("class") == "zoom":
            self._link = d.get("href") or ""
        elif tag == "img" and self._link is not None:
            self.zooms.append((self.figures[-1], self._link, d.get("src") or ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._link = None


def test_gallery_thumbnails_open_full_size_on_click_without_script(written: Path) -> None:
    html = written.read_text(encoding="utf-8")
    zooms = _Zooms()
    zooms.feed(html)
    assert len(zooms.zooms) == len(GALLERY)
    for figure_id, target, src in zooms.zooms:
        assert figure_id and target == f"#{figure_id}", "a thumbnail links to its own figure"
        assert src.startswith(PNG_PREFIX), "the full-size view is the embedded image, nothing fetched"
    assert len({figure for figure, _, _ in zooms.zooms}) == len(GALLERY)
    assert "figure:target img" in html and "<script" not in html


def test_banners_say_research_use_and_synthetic(page: Page, report_data: ReportData, tmp_path: Path) -> None:
    assert page.text["banner-research"] == "Research use only — not for diagnosis"
    assert page.text["banner-synthetic"].startswith("Synthetic data")
    real = _without_figures(report_data, synthetic=False)
    assert "banner-synthetic" not in Page(write_report(real, tmp_path / "real").read_text()).ids


def test_skipped_stages_render_not_run(tmp_path: Path) -> None:
    bare = ReportData(
        run_id="bare",
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        models=[ModelSection(name="fundus_cnn", version="1", architecture="resnet18")],
    )
    page = Page(write_report(bare, tmp_path).read_text(encoding="utf-8"))
    assert [s for s in SECTIONS if s not in page.ids] == []
    assert page.images == []
    for element_id in (
        "fusion-comparison",
        "missing-modality",
        "model-fundus_cnn-registry",
        "fusion-pairing",
    ):
        assert NOT_RUN in page.text[element_id], element_id
    for section in ("data", "explanations", "model-cards"):
        assert NOT_RUN in page.text[section], section
    assert page.text["model-fundus_cnn-primary"] == NOT_RUN
    assert page.row("summary-stages", "Fusion comparison")[1] == NOT_RUN


def test_report_json_round_trips_and_re_renders_identically(report_data: ReportData, written: Path) -> None:
    stored = ReportData.from_json((written.parent / "report.json").read_text(encoding="utf-8"))
    assert stored.to_json() == report_data.to_json()
    assert write_report(stored, written.parent).read_text(encoding="utf-8") == written.read_text(
        encoding="utf-8"
    )


def test_model_cards_are_written_beside_the_page(written: Path) -> None:
    report_dir = written.parent
    cards = sorted(p.name for p in (report_dir / "model_cards").iterdir())
    assert cards == ["fundus_cnn-v3.md", "fusion_head-v1.md", "oct_cnn-v3.md"]
    text = (report_dir / "model_cards" / "fundus_cnn-v3.md").read_text(encoding="utf-8")
    assert "## Intended use" in text and "## Limitations" in text


def test_gallery_images_from_memory_missing_or_outside_the_folder(
    report_data: ReportData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes(seed=9))
    items = [
        GalleryItem(
            path=path, caption=path, true_label="Mild", predicted_label="Mild", confidence=0.9, kind="correct"
        )
        for path in ("in-memory.png", "never-written.png", "../outside.png")
    ]
    data = _without_figures(
        report_data, explanations=[ExplainSection(model="fundus_cnn", method="gradcam", gallery=items)]
    )
    with caplog.at_level(logging.WARNING, logger="retina_core.reporting.html"):
        page = Page(write_report(data, tmp_path / "report", {"in-memory.png": png_bytes(seed=3)}).read_text())
    gallery_sources = [
        src for src in page.images if src == PNG_PREFIX + base64.b64encode(png_bytes(seed=3)).decode()
    ]
    assert len(gallery_sources) == 1
    text = page.text["explain-fundus_cnn-gallery"]
    assert "image missing: never-written.png" in text and "image missing: ../outside.png" in text
    assert sum("not found" in message for message in caplog.messages) == 2


def test_text_from_data_is_escaped(report_data: ReportData, tmp_path: Path) -> None:
    data = _without_figures(report_data, notes=["<script>alert(1)</script>"])
    html = write_report(data, tmp_path).read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;" in html
