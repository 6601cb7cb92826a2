"""No connection secret reaches Prefect: not its database, artifacts, logs, nor the report or the output.

``retina pipeline`` runs with canaries in every connection setting a deployment has:

* ``RETINA_DATABASE_URL``: a PostgreSQL catalog whose URL carries a canary in its query
  (``application_name``). The test role's password is fixed by the server, so the canary
  rides in the same string a password would; it is the stricter probe, since SQLAlchemy's
  ``hide_password`` masks a password but never a query argument;
* ``RETINA_S3_ENDPOINT_URL``: moto's S3 server behind ``user:password@`` credentials, with
  the curated store on it (``RETINA_STORAGE_URL=s3://…``), so every stage really uses it;
* ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``: canaries (moto accepts any).

Then every place a person (or anyone who can open the Prefect UI, which has no login) could
read is searched for each canary: the Prefect database files under ``PREFECT_HOME`` (WAL
included), every flow run's parameters, task runs, artifacts and logs through the Prefect
client, the library's log records, the report folder, every object in the store, stdout and
stderr. Before flows built their settings inside, the whole settings object was a flow
parameter, and the database canary sat in ``flow_run.parameters``.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from retina_cli.app import app
from retina_core.storage.s3 import make_s3_client
from tests.support.postgres import fresh_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TINY = {
    # The whole pipeline on a tiny synthetic set: the point is where values travel, not accuracy.
    "train": {
        "fundus": {"architecture": "test_resnet", "image_size": 32, "epochs": 1, "batch_size": 16},
        "oct": {"architecture": "test_resnet", "image_size": 32, "epochs": 1, "batch_size": 16},
        "device": "cpu",
        "num_workers": 0,
    },
    "evaluation": {"bootstrap": 50},
    "explain": {"examples_per_class": 1, "max_images": 4},
    "fusion": {"epochs": 3},
}


def _canary(kind: str) -> str:
    return f"canary{kind}{uuid.uuid4().hex[:12]}"


def _files_under(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _prefect_records(since: datetime) -> dict[str, str]:
    """Every flow run since ``since``, with its task runs, artifacts and logs, as JSON text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since))
        )
        ids = [r.id for r in runs]
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
        )
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
    return {
        "flow runs": json.dumps([r.model_dump(mode="json") for r in runs]),
        "task runs": json.dumps([t.model_dump(mode="json") for t in tasks]),
        "artifacts": json.dumps([a.model_dump(mode="json") for a in artifacts]),
        "logs": json.dumps([entry.model_dump(mode="json") for entry in logs]),
    }


def test_pipeline_keeps_connection_secrets_out_of_prefect_and_outputs(
    tmp_path: Path,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from retina_core.data.synthetic import SynthSpec, write_synthetic

    canaries = {name: _canary(name) for name in ("db", "endpoint", "keyid", "secret")}
    bucket = f"retina-secrets-{uuid.uuid4().hex[:12]}"
    make_s3_client(moto_server).create_bucket(Bucket=bucket)
    host = moto_server.removeprefix("http://")
    data = tmp_path / "data"
    write_synthetic(data, SynthSpec(fundus=70, oct=90, pairs=60, size=96, seed=3))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))

    with fresh_database() as database_url:
        monkeypatch.setenv("RETINA_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("RETINA_DATABASE_URL", f"{database_url}?application_name={canaries['db']}")
        monkeypatch.setenv("RETINA_STORAGE_URL", f"s3://{bucket}/retina")
        monkeypatch.setenv("RETINA_S3_ENDPOINT_URL", f"http://retina:{canaries['endpoint']}@{host}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", canaries["keyid"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canaries["secret"])
        since = datetime.now(UTC)
        with caplog.at_level(logging.INFO):
            result = CliRunner().invoke(
                app,
                [
                    "-v",
                    "pipeline",
                    "--aptos",
                    str(data / "aptos"),
                    "--kermany",
                    str(data / "kermany"),
                    "--pairs",
                    str(data / "pairs.csv"),
                    "--quick",
                    "--config",
                    str(config),
                    "--json",
                ],
            )
        assert result.exit_code == 0, result.stderr + repr(result.exception)
        output = json.loads(result.stdout)
        assert set(output) == {"run_id", "report_path", "ingested", "models", "fusion", "skipped"}
        assert [m["model"] for m in output["models"]] == ["fundus_cnn", "oct_cnn"] and output["fusion"]
        assert set(output["models"][0]) == {
            "model",
            "version",
            "status",
            "reused",
            "primary_metric",
            "primary",
        }
        assert [i["source"] for i in output["ingested"]] == ["aptos", "kermany", "pairs"]
        assert output["fusion"]["model"] == "fusion_head" and "gain_vs_best_single" in output["fusion"]
        # The run really used the canaried catalog and store.
        from sqlalchemy import create_engine, text

        engine = create_engine(database_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM model_versions")).scalar() == 3
        engine.dispose()
        stored = make_s3_client(moto_server).list_objects_v2(Bucket=bucket, Prefix="retina/reports/")
        assert stored.get("KeyCount", 0) >= 2

        places: dict[str, bytes] = {"stdout": result.stdout.encode(), "stderr": result.stderr.encode()}
        places["library logs"] = caplog.text.encode()
        places |= {k: v.encode() for k, v in _prefect_records(since).items()}
        places |= _files_under(Path(os.environ["PREFECT_HOME"]))
        places |= _files_under(tmp_path / "home")
        client = make_s3_client(moto_server)
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            places[f"s3://{bucket}/{item['Key']}"] = client.get_object(Bucket=bucket, Key=item["Key"])[
                "Body"
            ].read()

    assert any(k == "flow runs" for k in places) and len(places) > 20
    leaks = sorted(
        f"{name} in {where}"
        for where, blob in places.items()
        for name, c in canaries.items()
        if c.encode() in blob
    )
    assert not leaks, leaks
