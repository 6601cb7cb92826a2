"""Drift and label-shift checks on newly landed data, the champion watch, and the retrain policy.

:func:`retina_core.drift.check.check_drift` is the verb (``check-drift`` flow);
:func:`decide_retrain` is the pure policy the retrain pipeline applies to its verdict. This
package root imports only the light data modules: the check pulls in the encoders, and the
report (which shows a check) must not.
"""

from retina_core.drift.policy import RetrainDecision, decide_retrain
from retina_core.drift.result import DriftReport, ModalityDrift

__all__ = ["DriftReport", "ModalityDrift", "RetrainDecision", "decide_retrain"]
