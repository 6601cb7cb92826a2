"""The retrain pipeline as plain library calls: ingest → train fundus → train OCT → embed →
fusion → explain → report (registration happens inside each training stage).

``flows/pipeline.py`` composes the same verbs (:mod:`retina_core.verbs`) as Prefect tasks;
this is the orchestration-free twin used by tests and by ``make bench`` to measure
Prefect's overhead. Stages pass ids and small reports, never tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

from retina_core import verbs
from retina_core.config import Settings
from retina_core.domain import Modality
from retina_core.results import PipelineResult, SourceSpec


def run_pipeline(
    settings: Settings, sources: Sequence[SourceSpec], *, run_id: str | None = None, synthetic: bool = False
) -> PipelineResult:
    run_id = run_id or verbs.new_run_id()
    ingested = [verbs.ingest(settings, s.source, s.location) for s in sources]
    trains = [verbs.train(settings, m) for m in (Modality.FUNDUS, Modality.OCT)]
    verbs.embed(settings)
    fusion = verbs.train_fusion(settings)
    if settings.fusion.multitask:
        fusion = fusion.model_copy(update={"multitask": verbs.train_multitask_fusion(settings)})
    explanations = [verbs.explain(settings, t.model_name, t.version, run_id) for t in trains]
    if fusion is not None:
        explanations.append(verbs.explain_fusion(settings, fusion.version, run_id))
    path = verbs.write_report(settings, run_id, trains, fusion, explanations, synthetic=synthetic)
    return PipelineResult(
        run_id=run_id, report_path=str(path), ingested=ingested, models=trains, fusion=fusion
    )
