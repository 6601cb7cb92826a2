"""Champion watch: is the champion getting worse on the images that landed since it was trained?

The new images are patients the champion never saw, so its primary metric on them is an
independent estimate of the figure it was registered with (measured on the fixed test
split). Both come with patient-bootstrap intervals (the project's
:func:`~retina_core.evaluation.bootstrap.bootstrap_ci`); the two samples are independent, so
the interval of the difference combines the two half-widths in quadrature (each side
separately, as percentile intervals need not be symmetric).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from retina_core.drift.result import ChampionWatch
from retina_core.evaluation.bootstrap import Estimate, bootstrap_ci
from retina_core.evaluation.metrics import macro_f1, quadratic_weighted_kappa

METRICS: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {
    "qwk": quadratic_weighted_kappa,
    "macro_f1": macro_f1,
}


def difference(new: Estimate, registered: Estimate) -> Estimate:
    """``new - registered`` for two independent estimates, half-widths combined in quadrature."""
    value = new.value - registered.value
    below = math.hypot(new.value - new.low, registered.high - registered.value)
    above = math.hypot(new.high - new.value, registered.value - registered.low)
    return Estimate(value, value - below, value + above, new.n_units)


def watch_champion(
    model: str,
    metric: str,
    num_classes: int,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    patient_ids: np.ndarray,
    registered: Estimate,
    *,
    margin: float,
    n_boot: int = 1000,
    seed: int = 0,
) -> ChampionWatch:
    """The champion's ``metric`` on new labelled images against its registered figure.

    Degraded means both: the point estimate fell by more than ``margin`` (a drop worth a GPU
    hour) and the interval of the difference lies below zero (not a bad draw of patients).
    A registered figure without an interval counts as exact.
    """
    fn = METRICS[metric]
    new = bootstrap_ci(
        lambda t, p: fn(t, p, num_classes),
        np.asarray(y_true),
        np.asarray(y_pred),
        groups=np.asarray(patient_ids),
        n_boot=n_boot,
        seed=seed,
    )
    if not (math.isfinite(registered.low) and math.isfinite(registered.high)):
        registered = Estimate(registered.value, registered.value, registered.value, registered.n_units)
    diff = difference(new, registered)
    degraded = bool(diff.value < -margin and diff.high < 0)
    if not math.isfinite(diff.value):
        reason = f"{metric} is undefined on the new images (one class only?)"
    elif degraded:
        reason = (
            f"{metric} {new.value:.3f} on new images vs registered {registered.value:.3f}: "
            f"{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}], beyond the margin {margin}"
        )
    else:
        reason = (
            f"{metric} {new.value:.3f} on new images vs registered {registered.value:.3f}: "
            f"{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}], within the margin {margin} or not significant"
        )
    return ChampionWatch(
        model=model,
        metric=metric,
        registered=registered,
        new=new,
        difference=diff,
        margin=margin,
        degraded=degraded,
        reason=reason,
    )
