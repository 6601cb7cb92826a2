"""Shared fixtures. S3 is moto's real HTTP server on loopback, never the in-process mock,
so the tests exercise the same wire protocol, retries and checksums as MinIO or AWS."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.client import BaseClient
from moto.server import ThreadedMotoServer

from retina_core.storage import LocalObjectStore, ObjectStore, S3ObjectStore
from retina_core.storage.s3 import make_s3_client
from tests.support.moto import (
    FAKE_ACCESS_KEY_ID,
    FAKE_REGION,
    FAKE_SECRET_ACCESS_KEY,
    HOST,
    RestartableMotoServer,
)

_AWS_VARIABLES_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server for the whole session, with fake credentials in the env.

    monkeypatch is function-scoped, so a MonkeyPatch context restores the environment instead.
    """
    with pytest.MonkeyPatch.context() as env:
        for name in _AWS_VARIABLES_TO_CLEAR:
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
        env.setenv("AWS_DEFAULT_REGION", FAKE_REGION)
        env.setenv("AWS_CONFIG_FILE", os.devnull)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def moto_s3_client(moto_server: str) -> BaseClient:
    """One client for the session: building a boto3 client costs a few hundred milliseconds."""
    return make_s3_client(moto_server)


@pytest.fixture
def s3_bucket(moto_server: str, moto_s3_client: BaseClient) -> tuple[str, str]:
    """A fresh, uniquely named bucket: ``(endpoint_url, bucket_name)``."""
    name = f"retina-test-{uuid.uuid4().hex[:16]}"
    moto_s3_client.create_bucket(Bucket=name)
    return moto_server, name


@pytest.fixture
def restartable_moto(moto_server: str) -> Iterator[RestartableMotoServer]:
    """A second moto server that a test may stop and restart (same port, same state)."""
    server = RestartableMotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """A fresh empty store of each kind, so one test body covers both implementations."""
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    endpoint_url, bucket = request.getfixturevalue("s3_bucket")
    client = request.getfixturevalue("moto_s3_client")
    return S3ObjectStore(bucket, "store", endpoint_url=endpoint_url, client=client)
