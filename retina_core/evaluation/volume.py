"""From B-scan disease probabilities to one score per OCT volume (one eye, one visit).

An OCT device writes a volume of 49–128 B-scans; the clinical decision is about the eye, so
the B-scans' disease probabilities are pooled into a volume score. Three rules are kept and
reported side by side, because each fails differently:

- ``max``: the eye is as sick as its sickest B-scan. Catches a focal lesion seen on one scan,
  but every extra B-scan is another chance of a false positive, so specificity falls as
  volumes get denser.
- ``mean``: a consensus over all B-scans. Stable, but a lesion on 3 of 128 scans is diluted
  to nothing: it misses exactly the focal disease screening is for.
- ``top_decile_mean`` (the rule the volume decision uses): the mean over the ⌈n/10⌉ most
  suspicious B-scans. Real lesions (CNV, DME, drusen) span several neighbouring B-scans at
  any clinical scan density, while a spurious high score usually sits on one; averaging the
  top tenth keeps the sensitivity of ``max`` to a lesion that covers a tenth of the volume
  and needs agreement from more than one scan before it fires. It is ``max`` for volumes of
  up to 10 B-scans and moves towards ``mean`` only as the volume grows, and it needs no
  fitting, so it is as usable on the first clinic's data as on the hundredth.

The volume's true label is its worst B-scan label (a DICOM label is per volume anyway). The
driving B-scan is the one with the highest probability: the scan Grad-CAM explains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from retina_core.config import EvalSettings
from retina_core.evaluation.evaluate import evaluate_binary
from retina_core.evaluation.result import BinaryResult
from retina_core.evaluation.task_spec import TaskSpec

VolumeRule = Literal["max", "mean", "top_decile_mean"]
RULES: tuple[VolumeRule, ...] = ("max", "mean", "top_decile_mean")
DECISION_RULE: VolumeRule = "top_decile_mean"


def top_k(n: int) -> int:
    """How many B-scans the decision rule averages: a tenth of the volume, at least one."""
    return max(1, math.ceil(n / 10))


def volume_scores(disease: np.ndarray) -> dict[VolumeRule, float]:
    """Every rule's score for one volume's B-scan disease probabilities."""
    p = np.sort(np.asarray(disease, dtype=np.float64))[::-1]
    if p.size == 0:
        raise ValueError("a volume needs at least one B-scan")
    return {"max": float(p[0]), "mean": float(p.mean()), "top_decile_mean": float(p[: top_k(p.size)].mean())}


class VolumePrediction(BaseModel):
    """What ``retina predict`` says about an OCT volume besides its driving B-scan's classes."""

    b_scans: int
    driving_b_scan: int = Field(description="Index of the B-scan with the highest disease probability.")
    rule: VolumeRule = DECISION_RULE
    disease_probability: float = Field(description="The decision rule's volume score.")
    scores: dict[str, float] = Field(description="Volume score under every rule.")
    b_scan_disease: list[float]


def predict_volume(disease: np.ndarray) -> VolumePrediction:
    scores = volume_scores(disease)
    return VolumePrediction(
        b_scans=len(disease),
        driving_b_scan=int(np.argmax(disease)),
        disease_probability=scores[DECISION_RULE],
        scores=dict(scores),
        b_scan_disease=[float(p) for p in disease],
    )


class VolumeLevelResult(BaseModel):
    """Screening at volume (eye) level under each rule, beside the B-scan level, CIs by patient."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    n_volumes: int
    n_b_scans: int
    n_patients: int
    decision_rule: VolumeRule = DECISION_RULE
    b_scan: BinaryResult
    rules: dict[str, BinaryResult]


def pool_volumes(
    volume_ids: np.ndarray, disease: np.ndarray, y_disease: np.ndarray, patient_ids: np.ndarray
) -> tuple[np.ndarray, dict[VolumeRule, np.ndarray], np.ndarray, np.ndarray]:
    """Per volume (sorted ids): every rule's score, the worst label, and the patient."""
    ids = np.asarray(volume_ids)
    unique, inverse = np.unique(ids, return_inverse=True)
    scores: dict[VolumeRule, list[float]] = {rule: [] for rule in RULES}
    y = np.zeros(unique.size, dtype=bool)
    patients = np.empty(unique.size, dtype=object)
    for v in range(unique.size):
        rows = inverse == v
        for rule, value in volume_scores(disease[rows]).items():
            scores[rule].append(value)
        y[v] = bool(np.asarray(y_disease)[rows].any())
        patients[v] = np.asarray(patient_ids)[rows][0]
    return unique, {r: np.asarray(s) for r, s in scores.items()}, y, patients


def evaluate_volumes(
    volume_ids: np.ndarray,
    patient_ids: np.ndarray,
    disease: np.ndarray,
    y_disease: np.ndarray,
    settings: EvalSettings,
    *,
    validation: Mapping[str, np.ndarray] | None = None,
) -> VolumeLevelResult:
    """Volume-level screening metrics for every rule, and the B-scan level for comparison.

    ``validation`` (keys ``volume_ids``, ``patient_ids``, ``disease``, ``y_disease``) picks each
    rule's Youden threshold on the validation volumes, as the single-image evaluation does.
    """
    disease = np.asarray(disease, dtype=np.float64)
    y_disease = np.asarray(y_disease).astype(bool)
    _, scores, y, patients = pool_volumes(volume_ids, disease, y_disease, patient_ids)
    val_scores: dict[VolumeRule, np.ndarray] = {}
    val_y = None
    if validation is not None and len(validation["disease"]):
        _, val_scores, val_y, _ = pool_volumes(
            validation["volume_ids"],
            validation["disease"],
            validation["y_disease"],
            validation["patient_ids"],
        )
    rules = {
        rule: evaluate_binary(
            y, scores[rule], patients, settings, val_y01=val_y, val_score=val_scores.get(rule)
        )
        for rule in RULES
    }
    return VolumeLevelResult(
        n_volumes=int(y.size),
        n_b_scans=int(disease.size),
        n_patients=int(np.unique(patients.astype(str)).size),
        b_scan=evaluate_binary(y_disease, disease, np.asarray(patient_ids), settings),
        rules=rules,
    )


class _Split(Protocol):
    """What the evaluation needs of a split (``training.loop.SplitArrays`` has it, torch-free here)."""

    shas: list[str]
    labels: np.ndarray
    patient_ids: np.ndarray


def volume_level(
    task: TaskSpec,
    volumes: Mapping[str, str],
    val: tuple[_Split, np.ndarray],
    test: tuple[_Split, np.ndarray],
    settings: EvalSettings,
) -> VolumeLevelResult | None:
    """The eye-level evaluation of a split's B-scans that came from volumes; None when none did.

    ``val``/``test`` pair each split's arrays with its class probabilities; only rows whose
    sha256 maps to a volume id take part.
    """

    def rows(split: _Split, probs: np.ndarray) -> dict[str, np.ndarray]:
        keep = np.array([sha in volumes for sha in split.shas], dtype=bool)
        return {
            "volume_ids": np.array([volumes[s] for s in split.shas if s in volumes], dtype=object),
            "patient_ids": np.asarray(split.patient_ids)[keep],
            "disease": 1.0 - np.asarray(probs)[keep][:, task.normal_class] if keep.any() else np.zeros(0),
            "y_disease": np.asarray(split.labels)[keep] != task.normal_class,
        }

    on_test = rows(*test)
    if not len(on_test["disease"]):
        return None
    return evaluate_volumes(
        on_test["volume_ids"],
        on_test["patient_ids"],
        on_test["disease"],
        on_test["y_disease"],
        settings,
        validation=rows(*val),
    )
