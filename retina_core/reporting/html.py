"""The self-contained HTML report: one file that opens from disk with nothing fetched.

Figures and gallery images are embedded as base64 data URIs and the CSS is inline, so the
page can be mailed, archived or opened on an air-gapped workstation and still show
everything; a Content-Security-Policy forbids the browser from loading anything else. The
page is rendered from :class:`ReportData` alone (stored beside it as ``report.json``), so
a report can be re-rendered without re-running the pipeline.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from retina_core.evaluation import BinaryResult, EvaluationResult
from retina_core.reporting import figures
from retina_core.reporting.data import GalleryItem, ModelSection, ReportData
from retina_core.reporting.drift import drift_figures, drift_rows
from retina_core.reporting.format import (
    NOT_RUN,
    format_estimate,
    format_number,
    format_percent,
    format_signed_estimate,
    metric_label,
)

logger = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
_TEMPLATES = Path(__file__).parent / "templates"
_MIME = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


def data_uri(content: bytes) -> str:
    """``data:`` URI for a PNG or JPEG; anything else is refused rather than embedded blindly."""
    mime = next((m for magic, m in _MIME.items() if content.startswith(magic)), None)
    if mime is None:
        raise ValueError("only PNG and JPEG images can be embedded")
    return f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"


def _sentence_case(text: str) -> str:
    """First letter up, the rest as written: ``str.capitalize`` would turn 'DR' into 'dr'."""
    return text[:1].upper() + text[1:]


def _model_figures(model: ModelSection) -> dict[str, bytes]:
    result, key = model.evaluation, model.name
    out: dict[str, bytes] = {}
    if isinstance(result, EvaluationResult):
        image = result.image_level
        out[f"{key}-confusion"] = figures.confusion_matrix_png(
            image.confusion_matrix, result.label_names, "Confusion matrix, image level (row %)"
        )
        out[f"{key}-roc"] = figures.roc_png(
            [
                figures.RocSeries("Normal vs disease", image.disease_roc, image.disease_auc),
                figures.RocSeries(
                    _sentence_case(result.referable_name), image.referable_roc, image.referable_auc
                ),
            ],
            "ROC, image level",
        )
        calibration = result.calibration
        out[f"{key}-reliability"] = figures.reliability_png(
            calibration.before.reliability,
            calibration.after.reliability if calibration.after is not None else None,
            calibration.temperature,
        )
    elif isinstance(result, BinaryResult):
        out[f"{key}-roc"] = figures.roc_png([figures.RocSeries("Normal vs disease", result.roc, result.auc)])
    if model.curves is not None:
        out[f"{key}-curves"] = figures.training_curves_png(model.curves)
    return out


def report_figures(data: ReportData) -> dict[str, bytes]:
    """Every figure the page shows, by the key the template looks it up with."""
    out: dict[str, bytes] = {}
    for model in data.models:
        out |= _model_figures(model)
    if data.fusion_comparison:
        out["fusion-forest"] = figures.forest_png(
            data.fusion_comparison, "Fusion comparison: AUC with 95% CI"
        )
    if data.missing_modality:
        out["missing-forest"] = figures.forest_png(data.missing_modality, "Missing modality: AUC with 95% CI")
    if data.drift is not None:
        out |= drift_figures(data.drift)
    return out


def _inside(out_dir: Path, relative: str) -> Path | None:
    """The gallery path under ``out_dir``, or None when it points elsewhere (absolute or ``..``)."""
    root = out_dir.resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) else None


def gallery_images(
    data: ReportData, out_dir: Path, images: Mapping[str, bytes] | None = None
) -> dict[str, str]:
    """Gallery path -> data URI. A missing or unreadable image is logged and left out, not fatal:
    one lost overlay should not cost the whole report (the page says the image is missing)."""
    given = dict(images or {})
    items: list[GalleryItem] = [item for section in data.explanations or [] for item in section.gallery]
    out: dict[str, str] = {}
    for item in items:
        if item.path in out:
            continue
        content = given.get(item.path)
        if content is None:
            path = _inside(out_dir, item.path)
            if path is None or not path.is_file():
                logger.warning("gallery image %s not found under %s", item.path, out_dir)
                continue
            content = path.read_bytes()
        try:
            out[item.path] = data_uri(content)
        except ValueError:
            logger.warning("gallery image %s is neither PNG nor JPEG; left out", item.path)
    unused = sorted(set(given) - {item.path for item in items})
    if unused:
        logger.warning("images given for paths no gallery item names: %s", ", ".join(unused))
    return out


@functools.cache
def _environment() -> Environment:
    """Built once: jinja2 compiles the template on first use and the environment caches it."""
    env = Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters |= {
        "est": format_estimate,
        "gain": format_signed_estimate,
        "num": format_number,
        "pct": format_percent,
        "metric": metric_label,
    }
    env.globals |= {
        "NOT_RUN": NOT_RUN,
        "is_binary": lambda r: isinstance(r, BinaryResult),
        "drift_rows": drift_rows,
    }
    return env


def render_html(data: ReportData, figure_uris: Mapping[str, str], gallery_uris: Mapping[str, str]) -> str:
    """The page as a string; pure, so tests and re-rendering need no files."""
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(data=data, figures=figure_uris, gallery=gallery_uris, model_card_file=model_card_file)
    )


def model_card_file(name: str, version: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{name}-v{version}")
    return f"model_cards/{safe}.md"


def _write_atomic(path: Path, text: str) -> None:
    """Temporary file in the same folder, then rename: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(data: ReportData, out_dir: Path, images: dict[str, bytes] | None = None) -> Path:
    """Write ``index.html``, ``report.json`` and ``model_cards/*.md`` under ``out_dir``; return the page.

    Gallery images are read from their paths under ``out_dir``; ``images`` (gallery path ->
    bytes) supplies any the caller holds in memory, e.g. fetched from the object store.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure_uris = {key: data_uri(png) for key, png in report_figures(data).items()}
    page = render_html(data, figure_uris, gallery_images(data, out_dir, images))
    for model in data.models:
        if model.model_card is not None:
            _write_atomic(
                out_dir / model_card_file(model.name, model.version), model.model_card.to_markdown()
            )
    _write_atomic(out_dir / "report.json", data.to_json())
    index = out_dir / "index.html"
    _write_atomic(index, page)
    logger.info("report for run %s written to %s (%d figures)", data.run_id, index, len(figure_uris))
    return index
