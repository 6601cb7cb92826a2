"""The ``check-drift`` flow: newly accepted images against what each champion was trained on.

Triggered by ``retina.dataset.updated`` (ingestion accepted new images). It stores the
check, publishes it as artifacts and emits ``retina.dataset.drift`` carrying the figures
and the verdict; the ``retrain-pipeline`` deployment listens for that event and applies
the retrain policy (enough new images, drift, or a degraded champion) to it.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.states import State
from pydantic import Field

from flows.common import RunConfig
from retina_core.drift import DriftReport
from tasks.drift import check_drift_task, publish_drift_artifacts

DATASET_DRIFT = "retina.dataset.drift"


class DriftParams(RunConfig):
    dataset_version: int | None = Field(
        None, ge=1, description="Check the images up to this dataset version; the newest by default."
    )
    new_images: int | None = Field(
        None,
        ge=0,
        description="New images the triggering ingestion accepted, passed on to the retrain decision; "
        "None counts every image that landed since the champions were trained.",
    )
    emit: bool = Field(True, description="Emit retina.dataset.drift (which the retrain trigger listens for).")


def drift_event_payload(report: DriftReport, new_images: int | None) -> dict[str, object]:
    return report.payload() | {"new_images": report.new_images if new_images is None else new_images}


def failed_check_payload(params: DriftParams, error: str) -> dict[str, object]:
    """The verdict of a check that could not run: no drift claimed, the image count still counts.

    The retrain trigger listens to this event only, so a broken check (an unreadable champion,
    a store away) must not also switch off the "enough new images" rule.
    """
    return {
        "dataset_version": params.dataset_version,
        "new_images": params.new_images or 0,
        "drifted": False,
        "champion_degraded": False,
        "summary": f"drift check failed ({error}); only the new-images rule applies",
    }


@flow(name="check-drift", flow_run_name="check-drift", log_prints=False)
def check_drift_flow(params: DriftParams) -> DriftReport | State:
    logger = get_run_logger()
    state = check_drift_task(params.settings(), params.dataset_version, return_state=True)
    if state.is_failed():
        error = type(state.result(raise_on_failure=False)).__name__
        logger.error("drift check failed (%s); emitting a verdict without drift", error)
        if params.emit:
            emit_event(
                event=DATASET_DRIFT,
                resource={"prefect.resource.id": f"retina.dataset.{params.dataset_version}"},
                payload=failed_check_payload(params, error),
            )
        return state  # the flow run ends failed, with the task's error
    report: DriftReport = state.result()
    logger.info(
        "drift check %s: %s; %s",
        report.check_id,
        "drift detected" if report.drifted else "no drift",
        report.summary(),
    )
    publish_drift_artifacts(report)
    if params.emit:
        emit_event(
            event=DATASET_DRIFT,
            resource={"prefect.resource.id": f"retina.dataset.{report.dataset_version}"},
            payload=drift_event_payload(report, params.new_images),
        )
    return report
