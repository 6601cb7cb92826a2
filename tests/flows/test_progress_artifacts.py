"""What a run started from the Prefect UI shows while it goes, read back through Prefect's client.

Training moves a progress artifact epoch by epoch and re-publishes its per-epoch table
(one version per epoch, keyed per run); embedding moves one progress artifact per
modality shard by shard. The same runs feed the process's progress sink, which is what
the ``retina`` command draws in the terminal.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from retina_core import progress
from retina_core.config import write_settings_file
from retina_core.data.synthetic import SynthSpec
from retina_core.domain import Modality
from tests.fusion.world import World, build_world, register_stand_in

SPEC = SynthSpec(fundus=40, oct=60, pairs=0, size=64, seed=7)
"""Every split holds both labels in both modalities for this seed (as in test_fusion_flow)."""


class Recorder:
    """A progress sink that keeps every event (mapped shards report from several threads)."""

    def __init__(self) -> None:
        self.events: list[progress.ProgressEvent] = []
        self._lock = threading.Lock()

    def emit(self, event: progress.ProgressEvent) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type, stage: str) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and e.stage == stage]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_world(tmp_path, SPEC, train=False)
    torch.set_num_threads(before)


def _config_file(world: World) -> str:
    """The world's settings as the flow's config file (flows never take the settings object)."""
    return str(write_settings_file(world.settings, world.out.parent / "settings.yaml"))


def _artifacts(flow_run_id: object) -> list[Any]:
    """Every artifact (every version of a keyed one) created in the flow run, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return sorted(found, key=lambda a: a.created)


def test_training_moves_its_progress_artifact_to_100_and_tables_every_epoch(
    prefect_api: None, world: World
) -> None:
    from flows.train import TrainParams, train_modality_flow

    recorder = Recorder()
    params = TrainParams(
        modality=Modality.OCT, epochs=3, image_size=32, batch_size=64, config_file=_config_file(world)
    )
    with progress.installed(recorder):
        state = train_modality_flow(params, return_state=True)
    assert state.is_completed()
    artifacts = _artifacts(state.state_details.flow_run_id)

    bars = [a for a in artifacts if a.key == "train-oct-progress"]
    assert [(a.type, a.data) for a in bars] == [("progress", 100.0)]
    tables = [a for a in artifacts if (a.key or "").startswith("train-oct-epochs-")]
    assert len({a.key for a in tables}) == 1, "one key for the run's epochs table"
    rows = [json.loads(a.data) if isinstance(a.data, str) else a.data for a in tables]
    assert [len(r) for r in rows] == [1, 2, 3], "one version per epoch, each with the epochs so far"
    assert [row["epoch"] for row in rows[-1]] == [1, 2, 3]
    assert {"train_loss", "val_macro-F1", "images_per_s"} <= set(rows[-1][0])

    epochs = recorder.of(progress.EpochDone, "train oct")
    assert [(e.epoch, e.epochs, e.metric_name) for e in epochs] == [(n, 3, "macro-F1") for n in (1, 2, 3)]
    assert recorder.events[0] == progress.StageStarted("train oct")
    assert recorder.events[-1] == progress.StageFinished("train oct")


def test_embedding_moves_one_progress_artifact_per_modality_shard_by_shard(
    prefect_api: None, world: World
) -> None:
    from flows.embed import EmbedParams, embed_flow

    for modality in Modality:
        register_stand_in(world, modality, seed=0)
    recorder = Recorder()
    params = EmbedParams(shard_size=16, config_file=_config_file(world))
    with progress.installed(recorder):
        state = embed_flow(params, return_state=True)
    assert state.is_completed()
    artifacts = {a.key: a for a in _artifacts(state.state_details.flow_run_id)}
    for modality, images in ((Modality.FUNDUS, SPEC.fundus), (Modality.OCT, SPEC.oct)):
        bar = artifacts[f"embed-{modality.value}-progress"]
        assert (bar.type, bar.data) == ("progress", 100.0)
        stage = f"embed {modality.value}"
        shards = recorder.of(progress.ShardDone, stage)
        assert len(shards) == math.ceil(images / 16) and sum(s.items for s in shards) == images
        assert {s.total for s in shards} == {images}
        assert recorder.of(progress.StageStarted, stage) and recorder.of(progress.StageFinished, stage)

    again = Recorder()  # all cached now: the bars still end at 100%, but no stage is shown
    with progress.installed(again):
        state = embed_flow(params, return_state=True)
    artifacts = {a.key: a for a in _artifacts(state.state_details.flow_run_id)}
    assert all(artifacts[f"embed-{m.value}-progress"].data == 100.0 for m in Modality)
    assert again.events == []
