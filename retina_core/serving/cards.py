"""What the service says about each model it serves: the model card and its calibration.

Everything comes from the files registered beside the weights (``spec.json``,
``metrics.json``), built with the same :func:`build_model_card` the HTML report uses, so
the page and the report can never disagree about a model's test metrics. A version whose
files carry no evaluation (a stand-in) simply has no card; prediction still works.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from retina_core.catalog.registry import ModelVersion
from retina_core.evaluation import EvaluationResult
from retina_core.evaluation.result import BinaryResult
from retina_core.models.persist import read_json
from retina_core.reporting.model_card import ModelCard, build_model_card
from retina_core.storage import ObjectStore

log = logging.getLogger(__name__)

FUSION_ROWS = {"both": "fusion", "fundus-only": "fusion_fundus_only", "oct-only": "fusion_oct_only"}
"""The fusion evaluation's row for each way the head can be fed (its temperature and threshold)."""


class OperatingPoint(BaseModel):
    """Temperature and decision threshold of one way of using a model, from its test evaluation."""

    temperature: float | None
    threshold: float | None
    threshold_source: str | None = None


class ServedModel(BaseModel):
    """A loaded version with its card: what ``/v1/models`` lists and predictions cite."""

    name: str
    version: int
    status: str
    primary_metric: str
    primary_value: float | None
    primary_low: float | None
    primary_high: float | None
    card: ModelCard | None
    operating: dict[str, OperatingPoint]
    """Key ``"default"`` for a single-modality model; ``both``/``fundus-only``/``oct-only`` for fusion."""


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def describe(store: ObjectStore, version: ModelVersion) -> ServedModel:
    """The card and operating points of a registered version (None/empty when not recorded)."""
    card, operating = None, {}
    try:
        metrics = read_json(store, version.object_prefix, "metrics.json")
        if version.name == "fusion_head":
            card, operating = _fusion(metrics, version)
        elif "evaluation" in metrics:
            card, operating = _classifier(store, metrics, version)
    except (KeyError, TypeError, ValidationError, ValueError) as exc:
        log.warning("no model card for %s v%s: %s", version.name, version.version, type(exc).__name__)
    return ServedModel(
        name=version.name,
        version=version.version,
        status=version.status,
        primary_metric=version.primary_metric,
        primary_value=version.primary_value,
        primary_low=version.primary_low,
        primary_high=version.primary_high,
        card=card,
        operating=operating,
    )


def _classifier(
    store: ObjectStore, metrics: dict[str, Any], version: ModelVersion
) -> tuple[ModelCard, dict[str, OperatingPoint]]:
    evaluation = EvaluationResult.model_validate(metrics["evaluation"])
    spec = read_json(store, version.object_prefix, "spec.json")
    card = build_model_card(
        evaluation,
        spec,
        _split_counts(metrics.get("counts", {})),
        version=str(version.version),
        dataset_version=None if version.data_version is None else str(version.data_version),
    )
    temperature = _finite(evaluation.calibration.temperature)
    return card, {"default": OperatingPoint(temperature=temperature, threshold=None)}


def _split_counts(counts: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Split -> class -> images; a total per split (as training records it) becomes ``{"images": n}``."""
    return {s: dict(c) if isinstance(c, dict) else {"images": int(c)} for s, c in counts.items()}


def _fusion(metrics: dict[str, Any], version: ModelVersion) -> tuple[ModelCard, dict[str, OperatingPoint]]:
    from retina_core.results import FusionEvaluation

    ev = FusionEvaluation.model_validate(metrics)
    result: BinaryResult = ev.row("fusion").result
    spec = {
        "name": version.name,
        "architecture": f"{ev.head} on frozen encoder embeddings",
        "modality": "fundus + OCT embeddings",
        "label_names": ["normal", "disease"],
    }
    counts = {s: {"pairs": c.get("pairs", 0), "diseased": c.get("diseased", 0)} for s, c in ev.counts.items()}
    card = build_model_card(
        result,
        spec,
        counts,
        version=str(version.version),
        dataset_version=None if version.data_version is None else str(version.data_version),
        pairing=str(ev.pairing),
    )
    operating = {}
    for inputs, key in FUSION_ROWS.items():
        row = ev.row(key).result
        operating[inputs] = OperatingPoint(
            temperature=_finite(ev.temperatures.get(key)),
            threshold=_finite(row.youden_threshold),
            threshold_source=f"Youden threshold chosen on the {row.youden_source} split",
        )
    return card, operating


def scale_probabilities(probabilities: dict[str, float], temperature: float | None) -> dict[str, float]:
    """``softmax(logits / T)`` from ``softmax(logits)``: ``p ** (1/T)`` renormalised (exact).

    The log of a softmax differs from the logits by a constant, which the renormalisation
    removes, so the stored probabilities are enough; no second forward pass is needed.
    """
    if temperature is None:
        return dict(probabilities)
    logp = np.log(np.clip(np.asarray(list(probabilities.values()), dtype=np.float64), 1e-300, 1.0))
    z = logp / temperature
    scaled = np.exp(z - z.max())
    scaled /= scaled.sum()
    return {name: float(p) for name, p in zip(probabilities, scaled, strict=True)}


def scale_binary(probability: float, temperature: float | None) -> float:
    """Two-class temperature scaling of P(positive): ``sigmoid(logit(p) / T)``."""
    scaled = scale_probabilities({"negative": 1.0 - probability, "positive": probability}, temperature)
    return scaled["positive"]
