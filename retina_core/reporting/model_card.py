"""The model card as data (MONAI bundle ``metadata.json`` style), rendered to markdown on demand.

Being data, the card is stored in ``report.json`` beside the weights' metrics and can be
checked by a program (is the intended use stated? are CIs present?) as well as read. Every
figure in it comes from the evaluation result it was built from; limitations that depend on
the run (synthetic data, virtual pairs, class imbalance) are derived from the run's facts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from retina_core.evaluation import BinaryResult, Estimate, EvaluationResult
from retina_core.evaluation.result import ClassMetrics, LevelMetrics
from retina_core.reporting.format import format_estimate, format_number, metric_label

logger = logging.getLogger(__name__)

INTENDED_USE = (
    "Research and screening triage: ranking retinal images for review by an eye-care "
    "professional. Not for diagnosis, and not a medical device."
)
SINGLE_SITE = (
    "Trained on one public dataset per modality (APTOS 2019 fundus photographs, Kermany 2018 "
    "OCT B-scans), each from few sites and one population; performance on other cameras, "
    "OCT devices and populations is unknown."
)
SYNTHETIC = (
    "Trained and evaluated on synthetic images: the numbers show that the pipeline works, "
    "not how the model would perform on patients."
)
VIRTUAL_PAIRS = (
    "The fusion head saw virtual pairs (a fundus photo and an OCT scan from different "
    "patients, matched only by label); what it learnt about how the two modalities relate "
    "in one eye is untested."
)
IMBALANCE_RATIO = 2.0
"""Above this ratio between the largest and smallest training class, imbalance is a stated limitation."""

_LEVEL_METRICS = (
    "qwk",
    "macro_f1",
    "accuracy",
    "balanced_accuracy",
    "ovr_auc",
    "disease_auc",
    "disease_sensitivity",
    "disease_specificity",
    "referable_auc",
    "referable_sensitivity",
    "referable_specificity",
)
_BINARY_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "brier")


class _Card(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")


class InputSpec(_Card):
    modality: str = Field(description="'fundus', 'oct', or what a fusion head consumes.")
    image_size: int | None = Field(None, description="Square side in pixels; None for embedding inputs.")
    channels: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    label_names: list[str] = Field(default_factory=list)


class TrainingData(_Card):
    dataset_version: str | None
    counts: dict[str, dict[str, int]] = Field(description="Split -> class name -> images.")
    pairing: str | None = Field(None, description="'virtual' or 'real' for a fusion head.")


class CardMetric(_Card):
    name: str
    level: str = Field(description="'image', 'patient' or 'pair'.")
    estimate: Estimate


class CardCalibration(_Card):
    ece_before: float
    ece_after: float | None = Field(description="After temperature scaling; None when not fitted.")
    temperature: float | None
    n_bins: int | None = None


class ModelCard(_Card):
    name: str
    version: str
    architecture: str
    starting_weights: dict[str, str] | None = Field(
        None, description="Where training started: source name and SHA-256; None = from scratch."
    )
    task: str
    input: InputSpec
    training_data: TrainingData
    primary_metric: str
    metrics: list[CardMetric]
    per_class: list[ClassMetrics] = Field(default_factory=list)
    calibration: CardCalibration | None
    intended_use: str = INTENDED_USE
    limitations: list[str]

    def to_markdown(self) -> str:
        """A human-readable card; every figure is formatted from the fields, nothing is added."""
        lines = [
            f"# Model card: {self.name} v{self.version}",
            "",
            f"- **Architecture:** {self.architecture}",
            f"- **Starting weights:** {_starting_weights(self.starting_weights)}",
            f"- **Task:** {self.task}",
            f"- **Primary metric:** {metric_label(self.primary_metric)}",
            "",
            "## Intended use",
            "",
            self.intended_use,
            "",
            "## Input",
            "",
            *_input_lines(self.input),
            "",
            "## Training data",
            "",
            *_training_data_lines(self.training_data),
            "",
            "## Metrics (95% patient-bootstrap CIs, test split)",
            "",
            "| Metric | Level | Estimate |",
            "|---|---|---|",
            *[
                f"| {metric_label(m.name)} | {m.level} | {format_estimate(m.estimate)} |"
                for m in self.metrics
            ],
        ]
        if self.per_class:
            lines += [
                "",
                "### Per class (image level)",
                "",
                "| Class | Precision | Recall | F1 | Support |",
                "|---|---|---|---|---|",
                *[
                    f"| {c.name} | {format_estimate(c.precision)} | {format_estimate(c.recall)} "
                    f"| {format_estimate(c.f1)} | {c.support} |"
                    for c in self.per_class
                ],
            ]
        lines += ["", "## Calibration", "", *_calibration_lines(self.calibration), ""]
        lines += ["## Limitations", "", *[f"- {item}" for item in self.limitations], ""]
        return "\n".join(lines)


def _input_lines(spec: InputSpec) -> list[str]:
    lines = [f"- Modality: {spec.modality}"]
    if spec.image_size is not None:
        lines.append(f"- Size: {spec.image_size} × {spec.image_size} px, {spec.channels} channel(s)")
    if spec.mean is not None and spec.std is not None:
        lines.append(f"- Normalisation: mean {spec.mean}, std {spec.std}")
    if spec.label_names:
        lines.append(f"- Classes: {', '.join(spec.label_names)}")
    return lines


def _training_data_lines(data: TrainingData) -> list[str]:
    lines = [f"- Dataset version: {data.dataset_version or 'unknown'}"]
    if data.pairing:
        lines.append(f"- Pairing: {data.pairing}")
    if not data.counts:
        return [*lines, "- Counts: not recorded"]
    classes = list(dict.fromkeys(name for per_class in data.counts.values() for name in per_class))
    splits = list(data.counts)
    lines += ["", f"| Class | {' | '.join(splits)} |", "|---|" + "---|" * len(splits)]
    lines += [f"| {c} | {' | '.join(str(data.counts[s].get(c, 0)) for s in splits)} |" for c in classes]
    return lines


def _calibration_lines(calibration: CardCalibration | None) -> list[str]:
    if calibration is None:
        return ["Not measured."]
    return [
        f"- ECE before temperature scaling: {format_number(calibration.ece_before)}",
        f"- ECE after temperature scaling: {format_number(calibration.ece_after, missing='not fitted')}",
        f"- Temperature T: {format_number(calibration.temperature, missing='not fitted')}",
    ]


def _level_metrics(level: LevelMetrics, name: str) -> list[CardMetric]:
    estimates = [(key, getattr(level, key)) for key in _LEVEL_METRICS]
    return [CardMetric(name=key, level=name, estimate=e) for key, e in estimates if e is not None]


def _metrics(result: EvaluationResult | BinaryResult) -> list[CardMetric]:
    if isinstance(result, BinaryResult):
        return [CardMetric(name=key, level="pair", estimate=getattr(result, key)) for key in _BINARY_METRICS]
    return _level_metrics(result.image_level, "image") + _level_metrics(result.patient_level, "patient")


def _calibration(result: EvaluationResult | BinaryResult) -> CardCalibration:
    if isinstance(result, BinaryResult):
        return CardCalibration(ece_before=result.ece, ece_after=None, temperature=None)
    report = result.calibration
    return CardCalibration(
        ece_before=report.before.ece,
        ece_after=report.after.ece if report.after is not None else None,
        temperature=report.temperature,
        n_bins=report.n_bins,
    )


def _imbalance(counts: Mapping[str, Mapping[str, int]]) -> str | None:
    train = counts.get("train") or {}
    present = {name: n for name, n in train.items() if n > 0}
    if len(present) < 2:
        return None
    largest, smallest = max(present, key=present.__getitem__), min(present, key=present.__getitem__)
    ratio = present[largest] / present[smallest]
    if ratio < IMBALANCE_RATIO:
        return None
    return (
        f"Class imbalance: the training split has {present[largest]} '{largest}' images but only "
        f"{present[smallest]} '{smallest}' ({ratio:.1f}:1); rare-class metrics have wide intervals."
    )


def derive_limitations(
    counts: Mapping[str, Mapping[str, int]], *, synthetic: bool, pairing: str | None
) -> list[str]:
    """The limitations this run's facts imply, most consequential first."""
    items = [SYNTHETIC] if synthetic else []
    if pairing == "virtual":
        items.append(VIRTUAL_PAIRS)
    items.append(SINGLE_SITE)
    imbalance = _imbalance(counts)
    if imbalance:
        items.append(imbalance)
    return items


def _starting_weights(weights: Mapping[str, str] | None) -> str:
    if not weights:
        return "none (trained from scratch)"
    return f"{weights['source']} (SHA-256 {weights['sha256']})"


def build_model_card(
    result: EvaluationResult | BinaryResult,
    spec: Mapping[str, Any],
    counts: Mapping[str, Mapping[str, int]],
    *,
    version: str,
    dataset_version: str | None,
    synthetic: bool = False,
    pairing: str | None = None,
    extra_limitations: Sequence[str] = (),
    starting_weights: Mapping[str, str] | None = None,
) -> ModelCard:
    """A card from an evaluation result, a spec-like dict and the training counts (split -> class -> n).

    ``spec`` takes the keys of ``ModelSpec.to_dict()`` (``name``, ``architecture``,
    ``modality``, ``image_size``, ``in_chans``, ``mean``, ``std``, ``label_names``); a fusion
    head passes what it has. Unknown keys are ignored so a richer spec still builds a card.
    """
    is_binary = isinstance(result, BinaryResult)
    label_names = list(spec.get("label_names") or ([] if is_binary else result.label_names))
    card = ModelCard(
        name=str(spec["name"]),
        version=str(version),
        architecture=str(spec.get("architecture", "unknown")),
        starting_weights=dict(starting_weights) if starting_weights else None,
        task="normal vs disease screening" if is_binary else result.task,
        input=InputSpec(
            modality=str(spec.get("modality", "embeddings")),
            image_size=spec.get("image_size"),
            channels=spec.get("in_chans", spec.get("channels")),
            mean=list(spec["mean"]) if spec.get("mean") is not None else None,
            std=list(spec["std"]) if spec.get("std") is not None else None,
            label_names=label_names,
        ),
        training_data=TrainingData(
            dataset_version=dataset_version,
            counts={split: dict(per_class) for split, per_class in counts.items()},
            pairing=pairing,
        ),
        primary_metric="auc" if is_binary else result.primary_metric,
        metrics=_metrics(result),
        per_class=[] if is_binary else list(result.image_level.per_class),
        calibration=_calibration(result),
        limitations=[*derive_limitations(counts, synthetic=synthetic, pairing=pairing), *extra_limitations],
    )
    logger.debug("model card for %s v%s: %d metrics", card.name, card.version, len(card.metrics))
    return card
