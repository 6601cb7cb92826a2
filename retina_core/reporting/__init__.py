"""The run report: data in, a self-contained HTML page, model cards and Prefect markdown out.

Build a :class:`ReportData` from the stages' results, then :func:`write_report` renders it;
nothing here computes a metric, so every number on the page is one a stage produced.
"""

from retina_core.reporting.data import (
    ClassCount,
    ComparisonRow,
    DataSummary,
    ExplainSection,
    GalleryItem,
    ModelSection,
    PointingRow,
    RegistryDecision,
    ReportData,
    RoadRow,
    TrainingCurves,
    count_classes,
    pointing_rows,
    road_rows,
)
from retina_core.reporting.html import write_report
from retina_core.reporting.model_card import ModelCard, build_model_card

__all__ = [
    "ClassCount",
    "ComparisonRow",
    "DataSummary",
    "ExplainSection",
    "GalleryItem",
    "ModelCard",
    "ModelSection",
    "PointingRow",
    "RegistryDecision",
    "ReportData",
    "RoadRow",
    "TrainingCurves",
    "build_model_card",
    "count_classes",
    "pointing_rows",
    "road_rows",
    "write_report",
]
