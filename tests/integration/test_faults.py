"""Faults a deployed service meets: an S3 endpoint that goes away for seconds, a worker killed mid-run.

The outage tests take moto's server down for real (connections refused and cut) while
work is in flight. The kill tests run the work in a subprocess, as a worker's flow run
does, stop it dead with SIGKILL at a chosen point, and check that the store and the
catalog hold nothing half-done and that the next run reuses what was finished.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from botocore.client import BaseClient
from sqlalchemy.exc import OperationalError

from retina_core import verbs
from retina_core.catalog.registry import history, list_versions
from retina_core.catalog.repository import image_records
from retina_core.config import Settings, write_settings_file
from retina_core.data.synthetic import SynthSpec, write_synthetic
from retina_core.domain import Modality, Source
from retina_core.fusion.embedding_cache import EmbeddingCache
from retina_core.storage import S3ObjectStore, StorageError, StorageUnavailable
from retina_core.training.checkpoint import checkpoint_prefix
from tests.support.moto import RestartableMotoServer

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("fault_worker.py")
OUTAGE_S = 4.0


# --- which failures the pipeline's tasks retry ---------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (StorageUnavailable("S3 GET failed: EndpointConnectionError"), True),
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), True),
        (StorageError("S3 GET failed: AccessDenied (HTTP 403)"), False),
        (ValueError("a bug or bad data fails the same way again"), False),
    ],
)
def test_stage_tasks_retry_only_when_the_store_or_database_was_away(error: Exception, retried: bool) -> None:
    from prefect.states import Failed

    from tasks.explain import explain_task
    from tasks.retries import io_failure
    from tasks.train import train_modality_task

    for task in (train_modality_task, explain_task):
        assert task.retries == 2 and task.retry_condition_fn is io_failure
    assert io_failure(train_modality_task, None, Failed(data=error)) is retried


# --- an S3 endpoint that goes away -------------------------------------------------------------


class Outage:
    """Stops the server, then brings it back ``OUTAGE_S`` later, from a background thread."""

    def __init__(self, server: RestartableMotoServer) -> None:
        self.server = server
        self.stopped_at: float | None = None
        self.restarted_at: float | None = None
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        self.server.stop()
        self.stopped_at = time.monotonic()
        self._thread = threading.Thread(target=self._come_back, daemon=True)
        self._thread.start()

    def _come_back(self) -> None:
        time.sleep(OUTAGE_S)
        self.server.start()
        self.restarted_at = time.monotonic()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=OUTAGE_S + 10)
        self.server.start()  # idempotent: back up whatever happened

    @property
    def seconds(self) -> float:
        assert self.stopped_at is not None and self.restarted_at is not None, "no outage happened"
        return self.restarted_at - self.stopped_at


@pytest.mark.slow
def test_put_loop_survives_a_several_second_outage(
    restartable_moto: RestartableMotoServer, s3_bucket: tuple[str, str]
) -> None:
    store = S3ObjectStore(s3_bucket[1], "loop", endpoint_url=restartable_moto.endpoint_url)
    outage = Outage(restartable_moto)
    blobs = {f"objects/{i:03d}": hashlib.sha256(str(i).encode()).digest() * (i + 1) for i in range(30)}
    try:
        for i, (key, data) in enumerate(blobs.items()):
            if i == 10:
                outage.begin()  # puts 10.. wait in botocore's backoff until the server is back
            assert store.put_bytes(key, data) is True
    finally:
        outage.join()
    assert outage.seconds >= OUTAGE_S - 0.5
    assert {key: store.get_bytes(key) for key in blobs} == blobs


@pytest.mark.slow
def test_ingest_flow_survives_an_outage_mid_run(
    tmp_path: Path,
    restartable_moto: RestartableMotoServer,
    s3_bucket: tuple[str, str],
    moto_s3_client: BaseClient,
    prefect_api: None,
) -> None:
    """Landing and curated store both on the endpoint that goes down after the first image lands."""
    from flows.ingest import IngestParams, ingest_flow

    _, bucket = s3_bucket
    data = tmp_path / "data"
    write_synthetic(data, SynthSpec(fundus=48, oct=0, size=64, seed=31))
    for path in sorted((data / "aptos").rglob("*")):
        if path.is_file():
            key = f"landing/aptos/{path.relative_to(data / 'aptos').as_posix()}"
            moto_s3_client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    settings = Settings(
        home=tmp_path / "home",
        storage_url=f"s3://{bucket}/retina",
        s3_endpoint_url=restartable_moto.endpoint_url,
        database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
    )

    def curated() -> int:  # read through the session server, which stays up (moto's state is shared)
        return moto_s3_client.list_objects_v2(Bucket=bucket, Prefix="retina/images/").get("KeyCount", 0)

    outage = Outage(restartable_moto)
    stored_before_outage: list[int] = []

    def pull_the_plug() -> None:
        deadline = time.monotonic() + 120
        while (count := curated()) == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        stored_before_outage.append(count)
        outage.begin()

    watcher = threading.Thread(target=pull_the_plug, daemon=True)
    watcher.start()
    try:
        summary = ingest_flow(
            IngestParams(
                source=Source.APTOS,
                location=f"s3://{bucket}/landing/aptos",
                chunk_size=4,
                emit=False,
                config_file=str(write_settings_file(settings, tmp_path / "settings.yaml")),
            )
        )
    finally:
        watcher.join(timeout=130)
        outage.join()

    assert outage.seconds >= OUTAGE_S - 0.5
    assert 0 < stored_before_outage[0] < 48, "the outage did not fall in the middle of the run"
    assert (summary.accepted, summary.quarantined) == (48, []), summary.quarantined
    store = verbs.curated_store(settings)
    records = image_records(verbs.catalog_engine(settings), Modality.FUNDUS)
    assert len(records) == 48
    for record in records:
        assert hashlib.sha256(store.get_bytes(record.object_key)).hexdigest() == record.sha256


# --- a worker killed mid-run ---------------------------------------------------------------------


@pytest.fixture
def fault_env(tmp_path: Path, s3_bucket: tuple[str, str]) -> Iterator[tuple[dict[str, str], Settings]]:
    """The environment of a worker's flow run: S3 over HTTP, a SQLite catalog, a tiny OCT model."""
    endpoint_url, bucket = s3_bucket
    retina = {
        "RETINA_HOME": str(tmp_path / "home"),
        "RETINA_STORAGE_URL": f"s3://{bucket}/retina",
        "RETINA_S3_ENDPOINT_URL": endpoint_url,
        "RETINA_DATABASE_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
        "RETINA_TRAIN__DEVICE": "cpu",
        "RETINA_TRAIN__NUM_WORKERS": "0",
        "RETINA_TRAIN__OCT__IMAGE_SIZE": "32",
        "RETINA_TRAIN__OCT__EPOCHS": "2",
        "RETINA_TRAIN__OCT__BATCH_SIZE": "8",
        "RETINA_EVALUATION__BOOTSTRAP": "50",
    }
    env = {**os.environ, **retina, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with pytest.MonkeyPatch.context() as patch:  # the same settings in this process, for the checks
        for name, value in retina.items():
            patch.setenv(name, value)
        yield env, Settings()


def run_worker(env: dict[str, str], out: Path, *args: str, hang: bool = False) -> dict[str, object] | None:
    """Run fault_worker.py; with ``hang``, SIGKILL it once it reports that it reached its stop point."""
    out.parent.mkdir(parents=True, exist_ok=True)
    log = (out.parent / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(WORKER), args[0], str(out), *args[1:]],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        if not hang:
            code = process.wait(timeout=240)
            assert code == 0, f"worker failed ({code}):\n{(out.parent / 'worker.log').read_text()[-3000:]}"
            return json.loads(out.read_text())
        marker, deadline = out.parent / "hanging", time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, (
                f"worker ended early:\n{(out.parent / 'worker.log').read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, "worker never reached its stop point"
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
        return None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def model_keys(settings: Settings) -> list[str]:
    return [i.key for i in verbs.curated_store(settings).list("models/")]


def assert_cache_decodes(settings: Settings, expected: int) -> None:
    """Every preprocessed entry is a whole .npy of the cache's shape: none half-written."""
    store = verbs.curated_store(settings)
    keys = [i.key for i in store.list("cache/preprocessed/oct/32/")]
    assert len(keys) == expected
    for key in keys:
        array = np.load(io.BytesIO(store.get_bytes(key)), allow_pickle=False)
        assert (array.shape, array.dtype) == ((32, 32), np.uint8), key


@pytest.mark.slow
def test_killed_training_leaves_nothing_half_done_and_reruns_reuse_the_work(
    tmp_path: Path, fault_env: tuple[dict[str, str], Settings]
) -> None:
    env, settings = fault_env
    write_synthetic(tmp_path / "data", SynthSpec(fundus=0, oct=40, size=64, seed=21))
    assert verbs.ingest(settings, Source.KERMANY, str(tmp_path / "data" / "kermany")).accepted == 40
    engine, store = verbs.catalog_engine(settings), verbs.curated_store(settings)

    # 1. Killed in the second epoch: epoch 0's checkpoint is all it leaves, besides a whole cache.
    run_worker(env, tmp_path / "1" / "out.json", "train", "--hang-at-batch", "1,0", hang=True)
    assert list_versions(engine) == []
    assert model_keys(settings) == []
    assert_cache_decodes(settings, expected=40)
    checkpoints = [i.key.rsplit("/", 1)[1] for i in store.list("checkpoints/")]
    assert checkpoints == ["epoch-000.pt"]
    run_key = next(iter(store.list("checkpoints/"))).key.split("/")[1]
    assert store.exists(f"{checkpoint_prefix(run_key)}/epoch-000.pt")

    # 2. Killed while registering, after a model file landed: no row, so no version exists.
    #    The leftover sits in the slot the next registration of this model takes and replaces.
    run_worker(env, tmp_path / "2" / "out.json", "train", "--hang-in-register", hang=True)
    assert list_versions(engine) == []
    assert model_keys(settings) and all(k.startswith("models/oct_cnn/1/") for k in model_keys(settings))
    assert [i.key.rsplit("/", 1)[1] for i in store.list("checkpoints/")] == ["epoch-001.pt"]  # newest only

    # 3. Killed after the row committed, before the champion rule ran.
    run_worker(env, tmp_path / "3" / "out.json", "train", "--hang-before-decision", hang=True)
    [registered] = list_versions(engine)
    assert (registered.version, registered.status) == (1, "candidate")
    assert [e["action"] for e in history(engine, "oct_cnn")] == ["register"]
    files = {k.rsplit("/", 1)[1]: store.get_bytes(k) for k in model_keys(settings)}
    assert set(files) == {"weights.safetensors", "spec.json", "config.json", "metrics.json"}
    assert hashlib.sha256(files["weights.safetensors"]).hexdigest() == registered.weights_sha256
    assert json.loads(files["config.json"])["run_key"] == registered.run_key == run_key
    assert list(store.list("checkpoints/")) == []  # the registered version made it redundant

    # 4. Same inputs again: the version is reused and the interrupted decision is finished.
    report = run_worker(env, tmp_path / "4" / "out.json", "train")
    assert report is not None
    assert (report["version"], report["reused"], report["status"]) == (1, True, "champion")
    assert [e["action"] for e in history(engine, "oct_cnn")] == ["register", "promote"]

    # 5. And again: nothing new, not even a second decision.
    report = run_worker(env, tmp_path / "5" / "out.json", "train")
    assert report is not None and (report["version"], report["reused"], report["decision"]) == (1, True, None)
    assert [(v.name, v.version) for v in list_versions(engine)] == [("oct_cnn", 1)]
    assert len(history(engine, "oct_cnn")) == 2
    assert_cache_decodes(settings, expected=40)


@pytest.mark.slow
def test_killed_embedding_run_leaves_no_index_row_without_its_shard(
    tmp_path: Path, fault_env: tuple[dict[str, str], Settings]
) -> None:
    env, settings = fault_env
    key = "e" * 32
    shas = [f"{i:064x}" for i in range(1, 13)]
    expected = np.arange(12 * 8, dtype=np.float32).reshape(12, 8) / 7.0  # as fault_worker.embeddings

    # Killed after the second shard's object landed, before its index rows committed.
    run_worker(
        env, tmp_path / "1" / "out.json", "embed", key, "12", "4", "--hang-after-shard", "2", hang=True
    )
    cache = EmbeddingCache(verbs.curated_store(settings), verbs.catalog_engine(settings), key, shard_size=4)
    objects = [i.key for i in verbs.curated_store(settings).list(f"embeddings/{key}/")]
    assert len(objects) == 2, "both shard objects were written"
    assert [s.n for s in cache.shards()] == [4], "only the first shard is indexed"
    assert cache.missing(shas) == shas[4:]
    np.testing.assert_array_equal(cache.get(shas[:4]), expected[:4])
    assert cache.verify_and_evict_damaged() == []

    # The re-run computes only what is missing; the orphan shard's bytes are what it writes anyway.
    assert run_worker(env, tmp_path / "2" / "out.json", "embed", key, "12", "4") == {
        "computed": 8,
        "reused": 4,
    }
    assert cache.count() == 12 and len(cache.shards()) == 3
    np.testing.assert_array_equal(cache.get(shas), expected)
    assert cache.verify_and_evict_damaged() == []
    assert len([i.key for i in verbs.curated_store(settings).list(f"embeddings/{key}/")]) == 3
