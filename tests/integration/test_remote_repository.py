"""A model repository in S3, against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import moto.server as moto_server
import numpy as np
import pytest
import s3fs

import keepwarm
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.repository import Repository
from keepwarm.sources.filesystem import MARKER
from keepwarm.sources.remote_repository import RemoteSource


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, Any]]]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    try:
        yield fs, {"bucket": bucket, "storage_options": options}
    finally:
        server.stop()


def upload(fs: Any, local: Path, remote: str, *, marker: bool) -> None:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.pipe_file(f"{remote}/{path.relative_to(local).as_posix()}", path.read_bytes())
    if marker:
        fs.pipe_file(f"{remote}/{MARKER}", b"")


def test_new_version_uploaded_to_s3_is_picked_up_and_served(
    s3: tuple[Any, dict[str, Any]], example_models: Path
) -> None:
    fs, where = s3
    url = f"s3://{where['bucket']}/models"
    onnx = example_models / "mlp_onnx" / "1"
    upload(fs, onnx, f"{where['bucket']}/models/mlp/1", marker=True)
    fs.pipe_file(f"{where['bucket']}/models/mlp/model.toml", b"[labels]\nstable = 1\n")
    source = RemoteSource(url, storage_options=where["storage_options"])
    x = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    with Repository(url, source=source, poll_seconds=0.1) as repo:
        assert repo.wait_ready("mlp", timeout=60) == 1
        with repo.lease("mlp") as model:
            first = model.predict(x)["probs"]
            assert model.version == 1
        # Version 2 arrives without a marker: taken once its listing is stable over two scans.
        upload(fs, example_models / "mlp" / "1", f"{where['bucket']}/models/mlp/2", marker=False)
        repo.refresh()
        assert repo.wait_ready("mlp", 2, timeout=60) == 2
        with repo.lease("mlp") as model:
            assert model.version == 2
            np.testing.assert_allclose(model.predict(x)["probs"], first, atol=1e-5)
        with repo.lease("mlp", "stable") as model:
            assert model.version == 1
        assert repo.status().models["mlp"].versions[2].state is State.READY
        # Version 1 deleted from the store: it unloads, and nothing of it is kept.
        fs.pipe_file(f"{where['bucket']}/models/mlp/model.toml", b"")
        fs.rm(f"{where['bucket']}/models/mlp/1", recursive=True)
        repo.refresh()
        first = ModelId("mlp", 1)
        assert repo.manager.wait_for(
            lambda: repo.manager.state(first) in (State.UNLOADED, None), 60
        )
        repo.refresh()
        assert sorted(repo.status().models["mlp"].versions) == [2]
        assert ("mlp", 1) not in source._copied and ("mlp", 1) not in source._seen


def test_bucket_that_does_not_exist_is_a_clear_error(s3: tuple[Any, dict[str, Any]]) -> None:
    _fs, where = s3
    url = f"s3://no-such-{where['bucket']}/models"
    source = RemoteSource(url, storage_options=where["storage_options"])
    repo = Repository(url, source=source, poll_seconds=0.1)
    try:
        with pytest.raises(keepwarm.ModelNotFoundError, match=f"{url} does not exist"):
            repo.refresh()
        with pytest.raises(keepwarm.ModelNotFoundError, match="bucket does not exist"):
            repo.start()
    finally:
        repo.close()


def test_model_toml_that_cannot_be_read_is_a_config_error_not_a_failed_scan(
    tmp_path: Path,
) -> None:
    # Any fsspec store: here a local one, where a dangling symlink is a listed file that
    # cannot be read (as root, permissions would not stop a read).
    root = tmp_path / "models"
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "weights.bin").write_bytes(b"0")
    toml = root / "m" / "model.toml"
    toml.write_text("[labels]\nstable = 1\n")
    (root / "new" / "1").mkdir(parents=True)
    (root / "new" / "1" / "weights.bin").write_bytes(b"0")
    (root / "new" / "model.toml").symlink_to(tmp_path / "nowhere.toml")
    source = RemoteSource(root.as_uri(), cache_dir=tmp_path / "cache")
    listing = source.scan()
    assert listing["m"].config_error is None and listing["m"].config.labels == {"stable": 1}
    toml.unlink()
    toml.symlink_to(tmp_path / "nowhere.toml")
    listing = source.scan()
    error = listing["m"].config_error
    assert error is not None and "model.toml cannot be read" in error, error
    assert listing["m"].config.labels == {"stable": 1} and not listing["m"].blocked
    # Never good: the model is blocked (nothing of it loads until the file is fixed).
    assert listing["new"].blocked and "cannot be read" in str(listing["new"].config_error)


def test_a_copy_evicted_from_the_download_cache_is_copied_again(
    tmp_path: Path, example_models: Path
) -> None:
    from keepwarm.settings import DownloadSettings
    from keepwarm.sources.cache_bound import enforce_bound
    from keepwarm.sources.download_cache import entry_of

    root = tmp_path / "models"
    version = root / "mlp" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(
        (example_models / "mlp_onnx" / "1" / "model.onnx").read_bytes()
    )
    (version / MARKER).touch()
    downloads = DownloadSettings(cache_dir=tmp_path / "cache")
    source = RemoteSource(root.as_uri(), downloads=downloads)
    local = source.scan()["mlp"].versions[1].path
    assert local.is_relative_to(tmp_path / "cache")
    evicted = enforce_bound(DownloadSettings(cache_dir=tmp_path / "cache", cache_max_bytes=1))
    assert len(evicted) == 1 and not local.exists()
    listing = source.scan()["mlp"].versions[1]
    assert listing.complete and listing.path == local and local.exists()
    assert entry_of(local, downloads) is not None


def test_a_store_that_cannot_be_reached_is_a_failed_scan_not_an_empty_repository() -> None:
    # fsspec's find omits listing errors: this listed as {} and a server stood ready, empty
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/models"
    with pytest.raises(keepwarm.DownloadError, match=f"listing the model repository {url}"):
        RemoteSource(url).scan()


def test_an_empty_store_is_an_empty_repository(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    assert RemoteSource((tmp_path / "models").as_uri()).scan() == {}
