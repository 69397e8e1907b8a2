"""Remote stores through fsspec, against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import moto.server as moto_server
import pytest
import s3fs

from keepwarm.errors import DownloadError, ModelNotFoundError
from keepwarm.runtimes.savedmodel import SavedModelRuntime
from keepwarm.sources.remote import copy_to_cache, list_remote_dir
from keepwarm.sources.resolve import resolve_uri


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh bucket; returns an s3fs filesystem. Credentials are dummies from the env."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    fs.bucket = bucket
    yield fs


@pytest.fixture
def options(s3_endpoint: str) -> dict[str, Any]:
    return {"client_kwargs": {"endpoint_url": s3_endpoint}}


def _upload(fs: Any, local: Path, remote: str) -> None:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.pipe_file(f"{remote}/{path.relative_to(local).as_posix()}", path.read_bytes())


def test_copy_directory_and_reuse(s3, options, cache_dir, savedmodel_dir) -> None:
    url = f"s3://{s3.bucket}/resnet/1"
    _upload(s3, savedmodel_dir, url)
    seen: list[tuple[int, int | None]] = []
    path = copy_to_cache(
        url, cache_dir, storage_options=options, progress=lambda *a: seen.append(a)
    )
    assert SavedModelRuntime().incomplete(path) is None
    shard = "variables/variables.data-00000-of-00001"
    assert (path / shard).read_bytes() == (savedmodel_dir / shard).read_bytes()
    assert path.is_relative_to(cache_dir)
    assert seen[0][1] == seen[-1][0] == seen[-1][1]  # total known up front, all of it copied
    seen.clear()
    assert copy_to_cache(url, cache_dir, storage_options=options) == path
    assert resolve_uri(url, cache_dir=cache_dir, storage_options=options) == path
    assert seen == []


def test_changed_object_is_fetched_again(s3, options, cache_dir, savedmodel_dir) -> None:
    url = f"s3://{s3.bucket}/resnet/1"
    _upload(s3, savedmodel_dir, url)
    first = copy_to_cache(url, cache_dir, storage_options=options)
    shard = "variables/variables.data-00000-of-00001"
    old = (savedmodel_dir / shard).read_bytes()
    new = b"Z" * len(old)  # same size: only the etag tells the change
    s3.pipe_file(f"{url}/{shard}", new)
    second = copy_to_cache(url, cache_dir, storage_options=options)
    assert second != first
    assert (second / shard).read_bytes() == new
    assert (first / shard).read_bytes() == old  # the old copy stays for its users
    # offline, the newest copy is used without listing the store
    assert copy_to_cache(url, cache_dir, offline=True) == second


def test_single_file(s3, options, cache_dir) -> None:
    url = f"s3://{s3.bucket}/onnx/model.onnx"
    s3.pipe_file(url, b"onnx-bytes")
    path = copy_to_cache(url, cache_dir, storage_options=options)
    assert path.name == "model.onnx"
    assert path.read_bytes() == b"onnx-bytes"


def test_list_remote_dir(s3, options, savedmodel_dir) -> None:
    root = f"s3://{s3.bucket}/repo"
    _upload(s3, savedmodel_dir, f"{root}/resnet/1")
    _upload(s3, savedmodel_dir, f"{root}/resnet/2")
    s3.pipe_file(f"{root}/bert/3/saved_model.pb", b"g")
    assert list_remote_dir(root, storage_options=options) == ["bert", "resnet"]
    assert list_remote_dir(f"{root}/resnet/", storage_options=options) == ["1", "2"]


def test_missing_remote(s3, options, cache_dir) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        copy_to_cache(f"s3://{s3.bucket}/nope/1", cache_dir, storage_options=options)
    with pytest.raises(ModelNotFoundError):
        list_remote_dir(f"s3://{s3.bucket}/nope", storage_options=options)


def test_incomplete_remote_savedmodel(s3, options, cache_dir, make_savedmodel, tmp_path) -> None:
    model = make_savedmodel(tmp_path / "m", shards=2)
    (model / "variables" / "variables.data-00000-of-00002").unlink()
    url = f"s3://{s3.bucket}/broken/1"
    _upload(s3, model, url)
    with pytest.raises(DownloadError, match="not a complete SavedModel"):
        copy_to_cache(url, cache_dir, storage_options=options)
    assert list(cache_dir.glob("[!.]*.json")) == []
    assert list(cache_dir.glob(".tmp-*")) == []


def test_offline_not_cached(cache_dir) -> None:
    with pytest.raises(ModelNotFoundError, match="offline"):
        resolve_uri("s3://bucket/model/1", cache_dir=cache_dir, offline=True)


def test_missing_fsspec_says_which_extra(cache_dir, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # makes `import fsspec` fail
    with pytest.raises(DownloadError, match=r"pip install keepwarm\[remote\]"):
        copy_to_cache("s3://bucket/model/1", cache_dir)


def test_copies_are_bounded_like_downloads(s3, options, cache_dir) -> None:
    from keepwarm.settings import DownloadSettings

    downloads = DownloadSettings(cache_dir=cache_dir, cache_max_bytes=1500)
    urls = [f"s3://{s3.bucket}/m{i}/model.onnx" for i in range(3)]
    for i, url in enumerate(urls):
        s3.pipe_file(url, bytes([i]) * 1000)
    first = copy_to_cache(urls[0], downloads=downloads, storage_options=options)
    second = copy_to_cache(urls[1], downloads=downloads, storage_options=options)
    assert second.exists() and not first.exists()  # least recently used, and unused
    s3.pipe_file(urls[2], b"x" * 2000)
    with pytest.raises(DownloadError, match=r"2000 bytes, more than the download cache's bound"):
        copy_to_cache(urls[2], downloads=downloads, storage_options=options)
    assert second.exists()
