"""The ``train-modality`` flow: train, evaluate and register one single-modality model."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from flows.common import RunConfig
from retina_core.domain import Modality
from retina_core.reporting.markdown import metrics_rows, metrics_table
from retina_core.results import TrainReport
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
    patience: int | None = Field(
        None, ge=1, le=500, description="Epochs without validation improvement before stopping."
    )
    batch_size: int | None = Field(None, ge=1, le=1024)
    lr: float | None = Field(None, gt=0, lt=1, description="Peak AdamW learning rate.")
    seed: int | None = Field(None, description="Seed for init, sampling and augmentation.")
    device: Literal["auto", "cpu", "cuda"] | None = Field(None, description="'auto' uses CUDA when present.")
    loss: Literal["ce", "regression"] | None = Field(
        None, description="Fundus only: cross-entropy or regression with optimised thresholds."
    )
    data_version: int | None = Field(
        None, ge=1, description="Train on the images of this dataset version and earlier; None: the latest."
    )

    def overrides(self) -> dict[str, Any]:
        fields = {"architecture", "image_size", "epochs", "patience", "batch_size", "lr", "seed", "loss"}
        return {
            "train": {
                self.modality.value: self.model_dump(include=fields),
                "device": self.device,
                "data_version": self.data_version,
            }
        }


@flow(name="train-modality", flow_run_name="train-{params.modality}")
def train_modality_flow(params: TrainParams) -> TrainReport:
    report = train_modality_task(params.settings(), params.modality)
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
