"""The object-store contract, run against the local store and against S3 over HTTP (moto)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import traceback
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from retina_core.storage import (
    LocalObjectStore,
    ObjectExistsError,
    ObjectInfo,
    ObjectNotFoundError,
    ObjectStore,
    ObjectTooLarge,
    S3ObjectStore,
    StorageError,
    SymlinkRefused,
    UnsafeKeyError,
    open_store,
    split_s3_url,
)
from retina_core.storage.base import TEMP_PREFIX
from retina_core.storage.s3 import make_s3_client
from tests.support.moto import FAKE_SECRET_ACCESS_KEY, RestartableMotoServer

KEY = "images/fundus/" + "ab" * 32 + ".png"


def _temporaries(root: Path) -> list[str]:
    return [name for _, _, files in os.walk(root) for name in files if name.startswith(TEMP_PREFIX)]


# -- the contract, both stores -------------------------------------------------------------


def test_bytes_and_files_round_trip(object_store: ObjectStore, tmp_path: Path) -> None:
    assert isinstance(object_store, ObjectStore)
    assert object_store.put_bytes(KEY, b"fundus-bytes") is True
    assert object_store.get_bytes(KEY) == b"fundus-bytes"
    assert object_store.exists(KEY)
    assert object_store.size(KEY) == len(b"fundus-bytes")

    source = tmp_path / "upload.bin"
    source.write_bytes(os.urandom(3000))
    assert object_store.put_file("models/oct/v1/weights.safetensors", source) is True
    dest = object_store.get_file("models/oct/v1/weights.safetensors", tmp_path / "out" / "deep" / "w.bin")
    assert dest == tmp_path / "out" / "deep" / "w.bin"
    assert dest.read_bytes() == source.read_bytes()
    assert _temporaries(tmp_path) == []


def test_identical_put_is_idempotent(object_store: ObjectStore, tmp_path: Path) -> None:
    assert object_store.put_bytes(KEY, b"same") is True
    assert object_store.put_bytes(KEY, b"same") is False
    source = tmp_path / "same.bin"
    source.write_bytes(b"same")
    assert object_store.put_file(KEY, source) is False
    assert object_store.put_bytes(KEY, b"same", overwrite=True) is False
    assert object_store.get_bytes(KEY) == b"same"


def test_different_content_is_refused_and_original_kept(object_store: ObjectStore, tmp_path: Path) -> None:
    object_store.put_bytes(KEY, b"original")
    with pytest.raises(ObjectExistsError, match="fundus"):
        object_store.put_bytes(KEY, b"impostor")
    source = tmp_path / "other.bin"
    source.write_bytes(b"original but longer")
    with pytest.raises(ObjectExistsError):
        object_store.put_file(KEY, source)
    assert object_store.get_bytes(KEY) == b"original"


def test_overwrite_replaces(object_store: ObjectStore, tmp_path: Path) -> None:
    object_store.put_bytes("cache/x", b"old")
    assert object_store.put_bytes("cache/x", b"new", overwrite=True) is True
    assert object_store.get_bytes("cache/x") == b"new"
    source = tmp_path / "newer.bin"
    source.write_bytes(b"newer")
    assert object_store.put_file("cache/x", source, overwrite=True) is True
    assert object_store.get_bytes("cache/x") == b"newer"


def test_list_is_sorted_recursive_and_prefix_filtered(object_store: ObjectStore) -> None:
    payloads = {
        "images/oct/b.jpeg": b"bb",
        "images/fundus/z.png": b"z",
        "images/fundus/a.png": b"aaa",
        "images2/x": b"x",
        "reports/run-1/index.html": b"<html>",
        "top": b"t",
    }
    for key, data in payloads.items():
        object_store.put_bytes(key, data)

    everything = list(object_store.list())
    assert everything == [ObjectInfo(key, len(payloads[key])) for key in sorted(payloads)]
    assert [i.key for i in object_store.list("images/")] == [
        "images/fundus/a.png",
        "images/fundus/z.png",
        "images/oct/b.jpeg",
    ]
    assert [i.key for i in object_store.list("images")] == [
        "images/fundus/a.png",
        "images/fundus/z.png",
        "images/oct/b.jpeg",
        "images2/x",
    ]
    assert [i.key for i in object_store.list("images/fu")] == ["images/fundus/a.png", "images/fundus/z.png"]
    assert list(object_store.list("nothing/")) == []


UNSAFE_KEYS = ["", "/etc/passwd", "../escape", "a/../../b", "a\\b", "a\x00b", "a//b", "./a", "a/", "x/.tmp-1"]


def test_unsafe_keys_are_rejected(object_store: ObjectStore) -> None:
    for key in UNSAFE_KEYS:
        for call in (
            lambda key=key: object_store.put_bytes(key, b"x"),
            lambda key=key: object_store.get_bytes(key),
            lambda key=key: object_store.exists(key),
            lambda key=key: object_store.delete(key),
            lambda key=key: object_store.local_path(key),
        ):
            with pytest.raises(UnsafeKeyError):  # also a ValueError, for callers validating input
                call()
    assert issubclass(UnsafeKeyError, ValueError)
    assert list(object_store.list()) == []


def test_get_bytes_refuses_what_exceeds_the_limit(object_store: ObjectStore) -> None:
    object_store.put_bytes("masks/big.png", b"x" * 5000)
    with pytest.raises(ObjectTooLarge) as refused:
        object_store.get_bytes("masks/big.png", max_bytes=4999)
    assert refused.value.size == 5000
    assert object_store.get_bytes("masks/big.png", max_bytes=5000) == b"x" * 5000


def test_missing_key(object_store: ObjectStore, tmp_path: Path) -> None:
    assert object_store.exists("no/such") is False
    with pytest.raises(ObjectNotFoundError, match="no/such"):
        object_store.get_bytes("no/such")
    with pytest.raises(ObjectNotFoundError):
        object_store.get_file("no/such", tmp_path / "dest")
    with pytest.raises(ObjectNotFoundError):
        object_store.size("no/such")
    object_store.delete("no/such")
    assert not (tmp_path / "dest").exists()
    assert _temporaries(tmp_path) == []


def test_delete_removes_cache_entries(object_store: ObjectStore) -> None:
    object_store.put_bytes("cache/preprocessed/oct/64/abc", b"tensor")
    object_store.delete("cache/preprocessed/oct/64/abc")
    assert not object_store.exists("cache/preprocessed/oct/64/abc")
    assert list(object_store.list()) == []


def test_child_views_are_rooted_at_their_prefix(object_store: ObjectStore) -> None:
    models = object_store.child("models/fundus/")
    assert models.put_bytes("v1/config.json", b"{}") is True
    assert object_store.get_bytes("models/fundus/v1/config.json") == b"{}"
    object_store.put_bytes("models/oct/v1/config.json", b"[]")
    assert [i.key for i in models.list()] == ["v1/config.json"]
    assert models.child("v1").get_bytes("config.json") == b"{}"
    assert models.url.rstrip("/").endswith("models/fundus")
    endpoint = getattr(object_store, "_endpoint_url", None)
    reopened = open_store(models.url, s3_endpoint_url=endpoint)
    assert reopened.get_bytes("v1/config.json") == b"{}"


def _race(store: ObjectStore, key: str, payloads: list[bytes]) -> list[Any]:
    """Release one writer per payload at the same instant; each outcome is a bool or the error."""
    barrier = threading.Barrier(len(payloads))
    outcomes: list[Any] = [None] * len(payloads)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = store.put_bytes(key, payloads[i])
        except ObjectExistsError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.parametrize("same_content", [False, True])
def test_racing_writers_never_clobber(object_store: ObjectStore, same_content: bool) -> None:
    """Two writers on one key: one wins, the other sees the winner's object, which is whole."""
    for n in range(12):
        payloads = [b"A" * 50_000, b"A" * 50_000 if same_content else b"B" * 50_000]
        outcomes = _race(object_store, f"race/{n}", payloads)
        winners = [i for i, outcome in enumerate(outcomes) if outcome is True]
        assert len(winners) == 1, outcomes
        loser = outcomes[1 - winners[0]]
        if same_content:
            assert loser is False
        else:
            assert isinstance(loser, ObjectExistsError)
        assert object_store.get_bytes(f"race/{n}") == payloads[winners[0]]


# -- local store ---------------------------------------------------------------------------


def test_local_list_skips_temporaries(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("images/oct/a.jpeg", b"a")
    (tmp_path / "images" / "oct" / f"{TEMP_PREFIX}crashed").write_bytes(b"half")
    (tmp_path / f"{TEMP_PREFIX}dir").mkdir()
    (tmp_path / f"{TEMP_PREFIX}dir" / "inside").write_bytes(b"x")
    assert [i.key for i in store.list()] == ["images/oct/a.jpeg"]


def test_local_symlinks_are_listed_but_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"private")
    root = tmp_path / "landing"
    (root / "train_images").mkdir(parents=True)
    (root / "train_images" / "ok.png").write_bytes(b"png")
    (root / "train_images" / "evil.png").symlink_to(outside / "secret.txt")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    (root / "alias.png").symlink_to(root / "train_images" / "ok.png")
    store = LocalObjectStore(root)

    for call in (
        lambda: store.get_bytes("train_images/evil.png"),
        lambda: store.exists("train_images/evil.png"),
        lambda: store.get_bytes("escape_dir/secret.txt"),
        lambda: store.put_bytes("escape_dir/planted.txt", b"x"),
        lambda: store.child("escape_dir"),
    ):
        with pytest.raises(UnsafeKeyError):
            call()
    assert not (outside / "planted.txt").exists()
    # Links (to files or folders) are listed, so an ingest records them instead of
    # skipping them in silence; a linked folder is never entered ...
    listed = [i.key for i in store.list()]
    assert listed == ["alias.png", "escape_dir", "train_images/evil.png", "train_images/ok.png"]
    assert list(store.list("escape_dir/")) == []
    # ... and refused on read even when they stay inside: what is checked is what is read.
    with pytest.raises(SymlinkRefused):
        store.get_bytes("alias.png")


def test_local_path_points_at_the_real_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("embeddings/enc/0000", b"\x00" * 16)
    path = store.local_path("embeddings/enc/0000")
    assert path is not None and path.read_bytes() == b"\x00" * 16
    assert store.url == tmp_path.resolve().as_uri()
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_local_racing_processes_never_clobber(tmp_path: Path) -> None:
    """Processes, not threads: the os.link publish must hold across address spaces too."""
    store = LocalObjectStore(tmp_path)
    ready = tmp_path / "go"
    children = []
    for i in range(2):
        pid = os.fork()
        if pid == 0:  # child: wait for the start signal, write, report through the exit code
            code = 3
            try:
                while not ready.exists():
                    pass
                code = 0 if store.put_bytes("race/key", bytes([65 + i]) * 200_000) else 1
            except ObjectExistsError:
                code = 2
            finally:
                os._exit(code)
        children.append(pid)
    ready.touch()
    codes = sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children)
    assert codes == [0, 2]
    assert store.get_bytes("race/key") in (b"A" * 200_000, b"B" * 200_000)
    assert _temporaries(tmp_path) == []


# -- S3 store ------------------------------------------------------------------------------


@pytest.fixture
def s3_store(s3_bucket: tuple[str, str]) -> S3ObjectStore:
    endpoint_url, bucket = s3_bucket
    return S3ObjectStore(bucket, "store", endpoint_url=endpoint_url)


def test_s3_put_carries_the_sha256(
    s3_store: S3ObjectStore, s3_bucket: tuple[str, str], moto_s3_client: Any
) -> None:
    bucket = s3_bucket[1]
    s3_store.put_bytes("images/oct/x.jpeg", b"oct-bytes")
    head = moto_s3_client.head_object(Bucket=bucket, Key="store/images/oct/x.jpeg", ChecksumMode="ENABLED")
    digest = hashlib.sha256(b"oct-bytes").digest()
    assert head["ChecksumSHA256"] == base64.b64encode(digest).decode()
    assert head["Metadata"]["sha256"] == digest.hex()


def test_s3_recognises_objects_written_by_other_tools(
    s3_store: S3ObjectStore, s3_bucket: tuple[str, str], moto_s3_client: Any
) -> None:
    bucket = s3_bucket[1]
    moto_s3_client.put_object(Bucket=bucket, Key="store/foreign", Body=b"f")
    assert s3_store.put_bytes("foreign", b"f") is False
    with pytest.raises(ObjectExistsError):
        s3_store.put_bytes("foreign", b"g")


def _client_with_competing_put(endpoint_url: str, other: Any, bucket: str, key: str, payload: bytes) -> Any:
    """A client whose first PutObject is preceded by another writer's PUT of ``payload``.

    This forces the window between our existence check and our PUT, deterministically.
    """
    client = make_s3_client(endpoint_url)
    fired: list[bool] = []

    def compete(**_: Any) -> None:
        if not fired:
            fired.append(True)
            other.put_object(Bucket=bucket, Key=key, Body=payload)

    client.meta.events.register("before-call.s3.PutObject", compete)
    return client


@pytest.mark.parametrize(("theirs", "expected"), [(b"mine", False), (b"theirs", ObjectExistsError)])
def test_s3_conditional_write_catches_a_racing_writer(
    s3_bucket: tuple[str, str], moto_s3_client: Any, theirs: bytes, expected: Any
) -> None:
    endpoint_url, bucket = s3_bucket
    client = _client_with_competing_put(endpoint_url, moto_s3_client, bucket, "k", theirs)
    store = S3ObjectStore(bucket, endpoint_url=endpoint_url, client=client)
    if expected is False:
        assert store.put_bytes("k", b"mine") is False
    else:
        with pytest.raises(expected):
            store.put_bytes("k", b"mine")
    assert store.get_bytes("k") == theirs


def test_s3_falls_back_when_conditional_writes_are_unsupported(s3_bucket: tuple[str, str]) -> None:
    """Servers without If-None-Match support (older MinIO) answer 501; the store retries without it."""
    endpoint_url, bucket = s3_bucket
    client = make_s3_client(endpoint_url)
    rejected: list[str] = []

    def reject_conditional(request: Any, **_: Any) -> AWSResponse | None:
        if request.headers.get("If-None-Match") is None:
            return None
        rejected.append(request.url)
        body = b"<Error><Code>NotImplemented</Code><Message>not here</Message></Error>"
        return AWSResponse(request.url, 501, {}, _Raw(body))

    client.meta.events.register("before-send.s3.PutObject", reject_conditional)
    store = S3ObjectStore(bucket, endpoint_url=endpoint_url, client=client)
    assert store.put_bytes("a", b"1") is True
    assert store.put_bytes("b", b"2") is True
    assert len(rejected) == 1  # remembered: the second write went straight to a plain PUT
    assert store.get_bytes("a") == b"1" and store.get_bytes("b") == b"2"


class _Raw:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def _full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_s3_missing_bucket_error_does_not_leak_the_secret(moto_server: str) -> None:
    store = S3ObjectStore("retina-no-such-bucket", "p", endpoint_url=moto_server)
    with pytest.raises(StorageError, match="retina-no-such-bucket") as info:
        store.put_bytes("k", b"x")
    with pytest.raises(StorageError) as listing:
        list(store.list())
    for exc in (info.value, listing.value):
        assert FAKE_SECRET_ACCESS_KEY not in _full_text(exc)


@pytest.fixture
def moto_checks_credentials(moto_server: str) -> Iterator[None]:
    """Turn on moto's IAM checks (off by default) for one test, so unknown keys are refused."""

    def set_no_auth_count(value: str) -> None:
        request = urllib.request.Request(
            f"{moto_server}/moto-api/reset-auth",
            data=value.encode(),
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request) as response:
            assert json.load(response)["status"] == "ok"

    set_no_auth_count("0")
    try:
        yield
    finally:
        set_no_auth_count("inf")


def test_s3_wrong_credentials_error_does_not_leak_the_secret(
    s3_bucket: tuple[str, str], moto_checks_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint_url, bucket = s3_bucket
    wrong_secret = "wrong-secret-that-must-never-be-printed"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    store = S3ObjectStore(bucket, endpoint_url=endpoint_url)
    with pytest.raises(StorageError, match="credentials") as info:
        store.put_bytes("k", b"x")
    text = _full_text(info.value)
    assert "HTTP 403" in text
    assert wrong_secret not in text and FAKE_SECRET_ACCESS_KEY not in text


def test_s3_unreachable_endpoint_error_names_no_secret(restartable_moto: RestartableMotoServer) -> None:
    endpoint_url = restartable_moto.endpoint_url.replace("http://", "http://user:pw-in-url@")
    restartable_moto.stop()
    impatient = boto3.client("s3", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 1}))
    store = S3ObjectStore("retina-anything", endpoint_url=endpoint_url, client=impatient)
    with pytest.raises(StorageError, match="EndpointConnectionError") as info:
        store.get_bytes("k")
    text = _full_text(info.value)
    assert "pw-in-url" not in text and FAKE_SECRET_ACCESS_KEY not in text


def test_s3_survives_a_brief_endpoint_outage(
    restartable_moto: RestartableMotoServer, s3_bucket: tuple[str, str]
) -> None:
    # The bucket was made through the session server: moto's state is process-wide.
    store = S3ObjectStore(s3_bucket[1], endpoint_url=restartable_moto.endpoint_url)
    store.put_bytes("before", b"1")

    restartable_moto.stop()
    back_soon = threading.Timer(0.3, restartable_moto.start)
    back_soon.start()
    try:
        assert store.put_bytes("during", b"2") is True  # retried with backoff until the server is back
    finally:
        back_soon.join()
    assert [i.key for i in store.list()] == ["before", "during"]  # state survived the restart


# -- URL dispatch --------------------------------------------------------------------------


def test_open_store_dispatches_on_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = open_store(tmp_path.as_uri())
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path.resolve()
    plain = open_store(str(tmp_path / "plain"))
    assert isinstance(plain, LocalObjectStore) and plain.root == (tmp_path / "plain").resolve()
    monkeypatch.chdir(tmp_path)
    relative = open_store("rel/store")
    assert isinstance(relative, LocalObjectStore) and relative.root == (tmp_path / "rel" / "store").resolve()
    spaced = open_store((tmp_path / "with space").as_uri())
    assert isinstance(spaced, LocalObjectStore) and spaced.root.name == "with space"

    s3 = open_store("s3://retina-bucket/some/prefix/", s3_endpoint_url="http://127.0.0.1:9")
    assert isinstance(s3, S3ObjectStore)
    assert (s3.bucket, s3.prefix, s3.url) == (
        "retina-bucket",
        "some/prefix",
        "s3://retina-bucket/some/prefix",
    )
    assert split_s3_url("s3://b-1") == ("b-1", "")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "http://example.com/x",
        "gs://bucket/x",
        "file://host/x",
        "s3://",
        "s3://key:secret@bucket/x",
    ],
)
def test_open_store_rejects_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match=r"s3://bucket") as info:
        open_store(url)
    assert "secret" not in str(info.value)
