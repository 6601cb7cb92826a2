"""Thin Prefect task over ``retina_core.training.run.train_modality``, with a live progress artifact."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE

from retina_core import api
from retina_core.config import Settings
from retina_core.domain import Modality
from retina_core.training.loop import EpochLog
from retina_core.training.run import TrainReport, train_modality
from tasks.retries import IO_RETRIES


@task(name="train-modality", cache_policy=NONE, task_run_name="train-{modality}", **IO_RETRIES)
def train_modality_task(settings: Settings, modality: Modality) -> TrainReport:
    progress = create_progress_artifact(
        progress=0.0, key=f"train-{modality.value}-progress", description=f"{modality} training: epochs done"
    )

    def on_epoch(entry: EpochLog, total: int) -> None:
        update_progress_artifact(progress, progress=100.0 * (entry.epoch + 1) / total)

    report = train_modality(
        settings,
        modality,
        engine=api.catalog_engine(settings),
        store=api.curated_store(settings),
        on_epoch=on_epoch,
    )
    update_progress_artifact(progress, progress=100.0)
    return report
