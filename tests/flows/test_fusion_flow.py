"""The embed and train-fusion flows under Prefect's real ephemeral API, artifacts included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from retina_core.catalog.registry import champion
from retina_core.config import write_settings_file
from retina_core.data.synthetic import SynthSpec
from retina_core.domain import Modality
from tests.flows.conftest import assert_form, flow_run_artifacts
from tests.fusion.world import World, build_world, register_stand_in

SPEC = SynthSpec(fundus=40, oct=60, pairs=0, size=64, seed=7)
"""Small, but every split holds both labels in both modalities (checked for this seed)."""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Virtual pairs only (no manifest), from two registered stand-in encoders."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    w = build_world(tmp_path, SPEC, train=False, epochs=5)
    for modality in Modality:
        register_stand_in(w, modality, seed=0)
    yield w
    torch.set_num_threads(before)


def test_embed_then_fusion_flow_map_shards_and_publishflow_run_artifacts(
    prefect_api: None, world: World
) -> None:
    from flows.embed import EmbedParams, embed_flow
    from flows.fusion import FusionParams, train_fusion_flow

    config = str(write_settings_file(world.settings, world.out.parent / "settings.yaml"))
    state = embed_flow(EmbedParams(shard_size=16, config_file=config), return_state=True)
    assert state.is_completed()
    report = state.result()
    assert (report.fundus.computed, report.oct.computed) == (SPEC.fundus, SPEC.oct)
    assert "embedding-cache" in flow_run_artifacts(state.state_details.flow_run_id)

    state = train_fusion_flow(FusionParams(epochs=5, config_file=config), return_state=True)
    assert state.is_completed()
    fusion = state.result()
    assert fusion.pairing == "virtual" and fusion.version == 1
    assert fusion.embeddings is not None and fusion.embeddings.computed == 0  # the cache was warm
    assert fusion.embeddings.reused == SPEC.fundus + SPEC.oct
    assert {r.key for r in fusion.evaluation.rows} >= {"fusion", "shuffled_control", "late_fusion"}
    artifacts = flow_run_artifacts(state.state_details.flow_run_id)
    assert {"fusion-comparison", "fusion-comparison-table"} <= set(artifacts)
    markdown = artifacts["fusion-comparison"].data
    assert "VIRTUAL pairs" in markdown and "Shuffled-pair control" in markdown
    assert champion(world.engine, "fusion_multitask") is None and fusion.multitask is None  # off unless asked

    multitask = world.settings.model_copy(deep=True)
    multitask.fusion.multitask = True
    config = str(write_settings_file(multitask, world.out.parent / "multitask.yaml"))
    state = train_fusion_flow(FusionParams(epochs=5, config_file=config), return_state=True)
    assert state.is_completed()
    registered = champion(world.engine, "fusion_multitask")
    assert registered is not None and registered.primary_metric == "disease_auc"
    assert set(registered.summary["metrics"]) == {"grade_qwk", "oct_macro_f1", "disease_auc"}
    multitask_report = state.result().multitask  # the flow's report carries it (CLI --json, the report)
    assert multitask_report is not None and multitask_report.version == registered.version
    assert {"fundus_cnn_own", "oct_cnn_own", "shuffled_control"} <= {r.key for r in multitask_report.rows}


def test_flow_parameters_render_a_form_schema() -> None:
    from flows.embed import EmbedParams, embed_flow
    from flows.fusion import FusionParams, train_fusion_flow

    assert_form(
        train_fusion_flow,
        FusionParams,
        {
            "config_file": "string | null",
            "quick": "boolean",
            "pairing": "enum(auto,virtual,real) | null",
            "head": "enum(concat_mlp,gated) | null",
            "epochs": "integer | null",
            "seed": "integer | null",
        },
    )
    assert_form(
        embed_flow,
        EmbedParams,
        {
            "config_file": "string | null",
            "quick": "boolean",
            "shard_size": "integer | null",
            "batch_size": "integer | null",
            "modality": "enum(fundus,oct) | null",
        },
    )


def test_only_store_and_database_outages_are_retried() -> None:
    from prefect.states import Failed
    from sqlalchemy.exc import OperationalError

    from retina_core.fusion.embedding_cache import DamagedShard
    from retina_core.storage import ObjectNotFoundError, StorageError, StorageUnavailable
    from tasks import embed as embed_tasks
    from tasks.fusion import train_fusion as train_fusion_task
    from tasks.retries import io_failure

    for task in (embed_tasks.plan_embeddings, embed_tasks.select_encoders, train_fusion_task):
        assert task.retry_condition_fn is io_failure

    def retried(exc: BaseException) -> bool:
        return io_failure(None, None, Failed(data=exc))

    assert retried(StorageUnavailable("S3 GET failed: EndpointConnectionError"))
    assert retried(OperationalError("select", {}, Exception()))
    assert not retried(StorageError("S3 GET failed: AccessDenied (HTTP 403)"))
    assert not retried(ObjectNotFoundError("gone for good"))
    assert not retried(DamagedShard("embeddings/x/y.safetensors", "checksum mismatch"))
    assert not retried(ValueError("a bug"))


def test_embed_flow_for_one_modality_fills_only_that_cache(prefect_api: None, world: World) -> None:
    """What a dispatched ``embed-oct`` child does: the OCT encoder's shards, nothing of fundus."""
    from flows.embed import EmbedParams, embed_flow

    config = str(write_settings_file(world.settings, world.out.parent / "settings.yaml"))
    state = embed_flow(EmbedParams(modality=Modality.OCT, config_file=config), return_state=True)
    assert state.is_completed()
    report = state.result()
    assert report.fundus is None and report.oct is not None and report.computed == SPEC.oct
    assert set(report.contract()["modalities"]) == {"oct"}
    both = embed_flow(EmbedParams(config_file=config))  # the fundus half is still to do
    assert (both.fundus.computed, both.oct.computed, both.oct.reused) == (SPEC.fundus, 0, SPEC.oct)
