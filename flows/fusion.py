"""The ``train-fusion`` flow: fill the embedding cache (mapped shards), then train and compare.

The embedding step runs as the ``embed`` subflow so its shard-level work is mapped and
visible in the UI; ``train_fusion`` then finds every embedding cached. The flow's report
carries the subflow's computed/reused counts, since those are this run's work.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from pydantic import Field

from flows.common import RunConfig
from flows.embed import EmbedParams, embed_flow
from retina_core.results import FusionReport
from tasks.fusion import publish_fusion_artifacts, train_fusion, train_multitask_fusion


class FusionParams(RunConfig):
    pairing: Literal["auto", "virtual", "real"] | None = Field(
        None,
        description="'auto' uses real same-eye pairs when a pairs manifest was ingested, else virtual "
        "pairs; None keeps the settings'.",
    )
    head: Literal["concat_mlp", "gated"] | None = Field(
        None, description="Fusion head; None keeps the settings'."
    )
    epochs: int | None = Field(
        None, ge=1, le=10_000, description="Head training epochs; None keeps the settings'."
    )
    seed: int | None = Field(None, description="Pairing and head seed; None keeps the settings'.")

    def overrides(self) -> dict[str, Any]:
        return {
            "fusion": {"pairing": self.pairing, "head": self.head, "epochs": self.epochs, "seed": self.seed}
        }


@flow(name="train-fusion", flow_run_name="train-fusion", log_prints=False)
def train_fusion_flow(params: FusionParams) -> FusionReport:
    settings = params.settings()
    logger = get_run_logger()
    embedded = embed_flow(EmbedParams(config_file=params.config_file, quick=params.quick))
    report = train_fusion(settings).model_copy(update={"embeddings": embedded})
    logger.info("%s", report.summary_text())
    publish_fusion_artifacts(report)
    if settings.fusion.multitask:
        multitask = train_multitask_fusion(settings)
        logger.info("%s", multitask.summary_text())
        report = report.model_copy(update={"multitask": multitask})
    return report
