"""Ingest from an s3:// landing prefix into an S3 curated store, over moto's HTTP server."""

from __future__ import annotations

from pathlib import Path

import boto3

from retina_core import verbs
from retina_core.catalog.repository import export_images
from retina_core.config import Settings
from retina_core.domain import Source
from tests.catalog.test_ingest import broken_aptos, reasons


def upload_tree(root: Path, endpoint: str, bucket: str, prefix: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        client.put_object(
            Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes()
        )


def test_s3_landing_into_s3_store(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    upload_tree(broken_aptos(tmp_path / "aptos"), endpoint, bucket, "landing/aptos")
    settings = Settings(
        home=tmp_path / "home", storage_url=f"s3://{bucket}/curated", s3_endpoint_url=endpoint
    )
    summary = verbs.ingest(settings, Source.APTOS, f"s3://{bucket}/landing/aptos")
    assert summary.accepted == 4
    assert reasons(summary)["train_images/truncated.png"] == "corrupt"
    assert reasons(summary)["train_images/missing.png"] == "file_missing"
    store = verbs.curated_store(settings)
    rows = export_images(verbs.catalog_engine(settings))
    assert all(store.exists(r["object_key"]) for r in rows) and len(rows) == 4
    assert any(i.key.endswith("reason.json") for i in store.list("quarantine/aptos/"))
    again = verbs.ingest(settings, Source.APTOS, f"s3://{bucket}/landing/aptos")
    assert (again.accepted, again.already_known) == (0, 4)
