"""Drift and label-shift checks on newly landed data, the champion watch, and the retrain policy.

:func:`check_drift` is the verb (``check-drift`` flow, ``retina drift``); :func:`decide_retrain`
is the pure policy the retrain pipeline applies to its verdict.
"""

from retina_core.drift.check import check_drift, latest_drift_report
from retina_core.drift.policy import RetrainDecision, decide_retrain
from retina_core.drift.result import DriftReport, ModalityDrift

__all__ = [
    "DriftReport",
    "ModalityDrift",
    "RetrainDecision",
    "check_drift",
    "decide_retrain",
    "latest_drift_report",
]
