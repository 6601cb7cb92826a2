"""When to retrain: a pure function of the counts and the drift check's verdict.

Three rules, any one suffices: enough new images (``min_new_images``), drift beyond the
configured threshold (the check's Holm-controlled verdict, see ``DriftSettings``), or the
champion degraded beyond its margin on new labelled images. The decision names every rule
that fired, so the run's log and the report say why a retrain happened (or did not).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

NEW_IMAGES, DRIFT, DEGRADED, MANUAL = "new_images", "drift", "champion_degraded", "manual"


class RetrainDecision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    retrain: bool
    rules: list[str] = Field(description="Rules that fired: new_images, drift, champion_degraded, manual.")
    reason: str


def decide_retrain(
    new_images: int | None,
    min_new_images: int,
    *,
    drifted: bool = False,
    champion_degraded: bool = False,
    drift_summary: str | None = None,
) -> RetrainDecision:
    """Retrain when any rule fires; ``new_images=None`` (started by hand) always retrains."""
    if new_images is None:
        return RetrainDecision(retrain=True, rules=[MANUAL], reason="started by hand: no rule applies")
    fired = []
    reasons = []
    if new_images >= min_new_images:
        fired.append(NEW_IMAGES)
        reasons.append(f"{new_images} new images >= min_new_images {min_new_images}")
    if drifted:
        fired.append(DRIFT)
        reasons.append("drift beyond the configured threshold")
    if champion_degraded:
        fired.append(DEGRADED)
        reasons.append("the champion degraded beyond its margin on new labelled images")
    detail = f" ({drift_summary})" if drift_summary else ""
    if not fired:
        return RetrainDecision(
            retrain=False,
            rules=[],
            reason=f"no rule fired: {new_images} new images < min_new_images {min_new_images}, "
            f"no drift, champion within its margin{detail}",
        )
    return RetrainDecision(retrain=True, rules=fired, reason="; ".join(reasons) + detail)
