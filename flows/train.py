"""The ``train-modality`` flow: train, evaluate and register one single-modality model."""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from flows.common import RunConfig
from retina_core.config import Settings
from retina_core.domain import Modality
from retina_core.reporting.markdown import metrics_rows, metrics_table
from retina_core.training.run import TrainReport
from tasks.train import train_modality_task


class TrainParams(RunConfig):
    modality: Modality = Field(
        Modality.OCT, description="Which model: fundus (DR grade) or oct (Kermany class)."
    )
    architecture: str | None = Field(None, description="Any timm model name; default from settings.")
    image_size: int | None = Field(None, ge=16, le=1024, description="Square input side in pixels.")
    epochs: int | None = Field(
        None, ge=1, le=500, description="Maximum epochs (early stopping may end sooner)."
    )
    batch_size: int | None = Field(None, ge=1, le=1024)
    lr: float | None = Field(None, gt=0, lt=1, description="Peak AdamW learning rate.")
    seed: int | None = Field(None, description="Seed for init, sampling and augmentation.")
    device: Literal["auto", "cpu", "cuda"] | None = Field(None, description="'auto' uses CUDA when present.")
    loss: Literal["ce", "regression"] | None = Field(
        None, description="Fundus only: cross-entropy or regression with optimised thresholds."
    )

    def apply(self, settings: Settings) -> Settings:
        """Settings with this run's overrides; unset fields keep the configured values."""
        data = settings.model_dump()
        overrides = self.model_dump(
            include={"architecture", "image_size", "epochs", "batch_size", "lr", "seed", "loss"},
            exclude_none=True,
        )
        data["train"][self.modality.value].update(overrides)
        if self.device is not None:
            data["train"]["device"] = self.device
        return Settings.model_validate(data)


@flow(name="train-modality", flow_run_name="train-{params.modality}")
def train_modality_flow(params: TrainParams, settings: Settings | None = None) -> TrainReport:
    settings = params.apply(settings or params.settings())
    report = train_modality_task(settings, params.modality)
    create_table_artifact(
        key=f"{params.modality.value}-metrics",
        table=metrics_rows(report.evaluation),
        description=f"{report.model_name} v{report.version} on the fixed test split (95% patient-bootstrap CIs)",
    )
    title = f"{report.model_name} v{report.version} ({report.status})"
    create_markdown_artifact(
        key=f"{params.modality.value}-training", markdown=metrics_table(report.evaluation, title=title)
    )
    return report
