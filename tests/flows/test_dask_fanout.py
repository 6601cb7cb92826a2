"""The mapped chunks of ingest and embed on a 2-process Dask LocalCluster give what threads give.

One landing folder (fundus with two files to quarantine, OCT) is ingested and embedded
twice through the real flows on Prefect's ephemeral API: once with the default thread
runner, once with ``orchestration.task_runner = dask``. The catalogs (SHA-256s, labels,
splits), the quarantine reasons and the embedding shards must be identical, and a spy on
the Dask runner shows the chunks really went to it (so equality is not threads vs threads).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from retina_core import verbs
from retina_core.catalog.repository import export_images
from retina_core.config import write_settings_file
from retina_core.data.synthetic import SynthSpec, write_synthetic
from retina_core.domain import Modality, Source
from tests.fusion.world import World, register_stand_in, world_settings
from tests.support.files import image_bytes

pytest.importorskip("prefect_dask")

SPEC = SynthSpec(fundus=10, oct=8, pairs=0, size=64, seed=5)


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("landing")
    write_synthetic(out, SPEC)
    aptos = out / "aptos"
    (aptos / "train_images" / "badgrade.png").write_bytes(image_bytes(seed=91))
    (aptos / "train_images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with (aptos / "train.csv").open("a") as csv:
        csv.write("badgrade,9\nbroken,1\n")
    return out


def ingest_and_embed(home: Path, landing: Path, runner: str) -> dict[str, Any]:
    from flows.embed import EmbedParams, embed_flow
    from flows.ingest import IngestParams, ingest_flow

    settings = world_settings(home)
    settings.embed.shard_size = 4
    settings.orchestration.task_runner = runner  # type: ignore[assignment]
    config = str(write_settings_file(settings, home.parent / f"{runner}.yaml"))
    quarantined = []
    for source, location in ((Source.APTOS, landing / "aptos"), (Source.KERMANY, landing / "kermany")):
        params = IngestParams(
            source=source, location=str(location), chunk_size=3, emit=False, config_file=config
        )
        quarantined += [(q.path, q.reason) for q in ingest_flow(params).quarantined]
    engine, store = verbs.catalog_engine(settings), verbs.curated_store(settings)
    world = World(settings, engine, store, None, landing)  # type: ignore[arg-type]
    for modality in Modality:
        register_stand_in(world, modality, seed=0)
    report = embed_flow(EmbedParams(config_file=config))
    catalog = [
        {k: row[k] for k in ("sha256", "modality", "patient_id", "label", "split")}
        for row in export_images(engine)
    ]
    shards = {info.key: store.get_bytes(info.key) for info in store.list("embeddings/")}
    return {
        "catalog": catalog,
        "quarantined": sorted(quarantined),
        "shards": shards,
        "computed": (report.fundus.computed, report.oct.computed),
    }


def test_dask_local_cluster_gives_the_same_catalog_and_shards(
    prefect_api: None, tmp_path: Path, landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefect_dask

    threads = ingest_and_embed(tmp_path / "threads", landing, "thread")

    sent: list[str] = []
    real_map = prefect_dask.DaskTaskRunner.map

    def spy(self, task, parameters, wait_for=None):  # record, then really run on the cluster
        sent.append(task.name)
        for name, value in parameters.items():  # everything a mapped task receives must pickle
            items = value.value if hasattr(value, "value") else value
            assert pickle.loads(pickle.dumps(items)) is not None, name
        return real_map(self, task, parameters, wait_for)

    submitted: list[str] = []
    real_submit = prefect_dask.DaskTaskRunner.submit

    def submit_spy(self, task, parameters, wait_for=None, dependencies=None):  # ingest streams chunks
        submitted.append(task.name)
        for name, value in parameters.items():
            assert pickle.loads(pickle.dumps(value)) is not None, name
        return real_submit(self, task, parameters, wait_for, dependencies)

    monkeypatch.setattr(prefect_dask.DaskTaskRunner, "map", spy)
    monkeypatch.setattr(prefect_dask.DaskTaskRunner, "submit", submit_spy)
    dask = ingest_and_embed(tmp_path / "dask", landing, "dask")

    assert sent.count("embed-shard") == 2  # one map per modality
    chunks = -(-(SPEC.fundus + 2) // 3) + -(-SPEC.oct // 3)  # each source's files in chunks of 3
    assert submitted.count("ingest-files") == chunks
    assert len(threads["catalog"]) == SPEC.fundus + SPEC.oct
    assert dask["catalog"] == threads["catalog"]
    assert [reason for _, reason in threads["quarantined"]] and dask["quarantined"] == threads["quarantined"]
    assert dask["computed"] == threads["computed"] == (SPEC.fundus, SPEC.oct)
    assert len(threads["shards"]) >= 4 and dask["shards"] == threads["shards"]
