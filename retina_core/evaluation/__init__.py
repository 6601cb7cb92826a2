"""Evaluation: metrics, patient-level bootstrap CIs, calibration, as pure functions over arrays.

The entry points are :func:`evaluate_predictions` (multiclass grading) and
:func:`evaluate_binary` (screening); the building blocks live in the submodules.
"""

from retina_core.evaluation.bootstrap import Estimate, bootstrap_ci, paired_bootstrap_diff
from retina_core.evaluation.evaluate import evaluate_binary, evaluate_predictions
from retina_core.evaluation.result import BinaryResult, EvaluationResult
from retina_core.evaluation.task_spec import TaskSpec

__all__ = [
    "BinaryResult",
    "Estimate",
    "EvaluationResult",
    "TaskSpec",
    "bootstrap_ci",
    "evaluate_binary",
    "evaluate_predictions",
    "paired_bootstrap_diff",
]
