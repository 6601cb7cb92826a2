"""Thin Prefect task over the train verb (``retina_core.verbs.train``), with live progress.

Each epoch the training loop's ``on_epoch`` callback fans out to three places: the run's
progress artifact, a table artifact of the epochs so far (so the UI shows the curve while
the run goes, not only at the end), and the process's progress sink (the ``retina``
command's terminal display, when one is installed).
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from retina_core import progress, verbs
from retina_core.config import Settings
from retina_core.domain import Modality
from retina_core.results import TrainReport
from retina_core.training.loop import EpochLog, validation_metric_name
from tasks.retries import IO_RETRIES


def epochs_table_key(modality: Modality) -> str:
    """One key per flow run, so the key's newest version is this run's table, not another's."""
    return f"train-{modality.value}-epochs-{str(flow_run.get_id() or 'local')[:8]}"


def epoch_row(entry: EpochLog, metric: str) -> dict[str, float | int]:
    return {
        "epoch": entry.epoch + 1,
        "train_loss": round(entry.train_loss, 4),
        "val_loss": round(entry.val_loss, 4),
        f"val_{metric}": round(entry.val_metric, 4),
        "lr": float(f"{entry.lr:.3g}"),
        "images_per_s": round(entry.images_per_second, 1),
        "seconds": round(entry.seconds, 1),
    }


@task(name="train-modality", cache_policy=NONE, task_run_name="train-{modality}", **IO_RETRIES)
def train_modality_task(settings: Settings, modality: Modality) -> TrainReport:
    artifact = create_progress_artifact(
        progress=0.0, key=f"train-{modality.value}-progress", description=f"{modality} training: epochs done"
    )
    metric = validation_metric_name(modality)
    rows: list[dict[str, float | int]] = []

    def on_epoch(entry: EpochLog, total: int) -> None:
        update_progress_artifact(artifact, progress=100.0 * (entry.epoch + 1) / total)
        rows.append(epoch_row(entry, metric))
        create_table_artifact(
            key=epochs_table_key(modality),
            table=rows,
            description=f"{modality} training, epoch {entry.epoch + 1} of at most {total} "
            f"(validation {metric}; early stopping may end sooner)",
        )
        progress.emit(
            progress.EpochDone(
                stage=f"train {modality}",
                epoch=entry.epoch + 1,
                epochs=total,
                train_loss=entry.train_loss,
                val_metric=entry.val_metric,
                metric_name=metric,
                images_per_second=entry.images_per_second,
                seconds=entry.seconds,
            )
        )

    report = verbs.train(settings, modality, on_epoch=on_epoch)
    update_progress_artifact(artifact, progress=100.0)
    return report


@task(name="read-training", cache_policy=NONE, task_run_name="read-training-{modality}", **IO_RETRIES)
def registered_training_task(settings: Settings, modality: Modality) -> TrainReport:
    """What a (dispatched) training with these settings registered, from the catalog."""
    return verbs.registered_training(settings, modality)


@task(name="latest-data-version", cache_policy=NONE, **IO_RETRIES)
def latest_data_version_task(settings: Settings) -> int | None:
    return verbs.latest_data_version(settings)
