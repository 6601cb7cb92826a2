"""The ``retrain-pipeline`` flow: ingest → train fundus → train OCT → embed → fusion →
explain → report; every training stage registers its model and applies the champion rule.

Triggered by ``retina.dataset.updated`` (the deployment passes the event's
``new_images``) or run by ``retina pipeline`` / ``retina demo``. Stages pass ids and
small reports between them; images and tensors stay in the object store.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from pydantic import Field

from flows.common import RunConfig
from flows.dispatch import Child, run_children
from flows.embed import EmbedParams, embed_flow
from flows.fusion import FusionParams, train_fusion_flow
from flows.ingest import IngestParams, ingest_flow
from flows.train import TrainParams, train_modality_flow
from retina_core.config import OrchestrationSettings
from retina_core.domain import Modality
from retina_core.drift.policy import decide_retrain
from retina_core.results import PipelineResult, SourceSpec, TrainReport
from retina_core.training.run import NotTrainedHere
from retina_core.verbs import RUN_ID_PATTERN, new_run_id
from tasks.explain import explain_fusion_task, explain_task, report_task
from tasks.train import latest_data_version_task, registered_training_task


class PipelineParams(RunConfig):
    sources: list[SourceSpec] = Field(
        default_factory=list,
        description="Landing locations to ingest first; empty when triggered by ingestion.",
    )
    train_epochs: int | None = Field(
        None, ge=1, le=500, description="Maximum epochs of both encoders; None keeps the settings'."
    )
    train_patience: int | None = Field(
        None, ge=1, le=500, description="Early-stopping patience of both encoders; None keeps the settings'."
    )
    min_new_images: int = Field(1, ge=0, description="Skip the retrain when fewer new images arrived.")
    new_images: int | None = Field(
        None, description="New images reported by the triggering event; None when started by hand."
    )
    drifted: bool = Field(False, description="The drift check found drift beyond its threshold (retrains).")
    champion_degraded: bool = Field(
        False, description="The drift check found a champion degraded beyond its margin (retrains)."
    )
    drift_summary: str | None = Field(None, description="The drift check's one-line verdict, for the log.")
    synthetic: bool = Field(False, description="Data came from `retina synth` (said plainly in the report).")
    run_id: str | None = Field(
        None,
        pattern=RUN_ID_PATTERN,
        description="Report folder name (letters, digits, '.', '_', '-'); a timestamped id by default.",
    )

    def train_params(self, modality: Modality, data_version: int | None = None) -> TrainParams:
        """The train-modality form of one encoder: this run's file, preset and encoder overrides."""
        return TrainParams(
            modality=modality,
            config_file=self.config_file,
            quick=self.quick,
            epochs=self.train_epochs,
            patience=self.train_patience,
            data_version=data_version,
        )


def _run_name() -> str:
    """``retrain-<run id>`` when the caller chose the id (the report folder), else ``retrain-<event|manual>``."""
    from prefect.runtime import flow_run

    params = flow_run.parameters.get("params")
    get = params.get if isinstance(params, dict) else lambda key: getattr(params, key, None)
    if get("run_id"):
        return f"retrain-{get('run_id')}"
    return "retrain-event" if get("new_images") is not None else "retrain-manual"


@flow(name="retrain-pipeline", flow_run_name=_run_name)
def retrain_pipeline_flow(params: PipelineParams) -> PipelineResult:
    logger = get_run_logger()
    settings = params.settings()
    run_id = params.run_id or new_run_id()
    decision = decide_retrain(
        params.new_images,
        params.min_new_images,
        drifted=params.drifted,
        champion_degraded=params.champion_degraded,
        drift_summary=params.drift_summary,
    )
    logger.info(
        "retrain %s; rules fired: %s; %s", decision.retrain, decision.rules or "none", decision.reason
    )
    if not decision.retrain:
        return PipelineResult(run_id=run_id, report_path="", skipped=decision.reason)
    preset = {"config_file": params.config_file, "quick": params.quick}
    ingested = [
        ingest_flow(IngestParams(source=s.source, location=s.location, emit=False, **preset))
        for s in params.sources
    ]
    if settings.orchestration.stages == "deployments":
        pinned = latest_data_version_task(settings)
        trains = _dispatch_train_and_embed(params, pinned, settings.orchestration)
    else:
        trains = [train_modality_flow(params.train_params(m)) for m in Modality]
        embed_flow(EmbedParams(**preset))
    fusion = train_fusion_flow(FusionParams(**preset))
    explained = [explain_task.submit(settings, t.model_name, t.version, run_id) for t in trains]
    if fusion is not None:
        explained.append(explain_fusion_task.submit(settings, fusion.version, run_id))
    path = report_task(
        settings, run_id, trains, fusion, [e.result() for e in explained], params.synthetic, retrain=decision
    )
    result = PipelineResult(
        run_id=run_id, report_path=str(path), ingested=ingested, models=trains, fusion=fusion
    )
    create_link_artifact(key="retina-report", link=path.as_uri(), description=f"Report of run {run_id}")
    lines = [
        f"- **{t.model_name} v{t.version}** ({t.status}): {t.evaluation.primary_metric} "
        f"{t.evaluation.primary.value:.3f} [{t.evaluation.primary.low:.3f}, {t.evaluation.primary.high:.3f}]"
        for t in trains
    ]
    create_markdown_artifact(
        key="retina-pipeline", markdown=f"# Run {run_id}\n\n" + "\n".join(lines) + f"\n\nReport: `{path}`"
    )
    return result


def _dispatch_train_and_embed(
    params: PipelineParams, pinned: int | None, orchestration: OrchestrationSettings
) -> list[TrainReport]:
    """Both encoders trained, then both caches filled, as concurrent child runs on the GPU pool.

    ``pinned``, the catalog's dataset version when the stage began, keeps both children on
    the same images even if an ingestion lands meanwhile, and lets the versions they
    register be found by run key (the same form gives the same settings on the child's side). A modality whose
    version for these inputs is already registered and decided is not dispatched again.
    """
    logger = get_run_logger()
    forms = {m: params.train_params(m, data_version=pinned) for m in Modality}
    done: dict[Modality, TrainReport] = {}
    for modality, form in forms.items():
        try:
            report = registered_training_task(form.settings(), modality)
        except NotTrainedHere:
            continue
        if report.decision is not None:
            logger.info("%s v%d already trained on these inputs: reused", report.model_name, report.version)
            done[modality] = report
    todo = [
        Child(f"train-{m.value}", orchestration.train_deployment, f)
        for m, f in forms.items()
        if m not in done
    ]
    if todo:
        run_children(
            todo, orchestration.dispatch_poll_seconds, "train", orchestration.dispatch_timeout_seconds
        )
    trains = [done.get(m) or registered_training_task(f.settings(), m) for m, f in forms.items()]
    preset = {"config_file": params.config_file, "quick": params.quick}
    embeds = [
        Child(f"embed-{m.value}", orchestration.embed_deployment, EmbedParams(modality=m, **preset))
        for m in Modality
    ]
    run_children(embeds, orchestration.dispatch_poll_seconds, "embed", orchestration.dispatch_timeout_seconds)
    return trains
