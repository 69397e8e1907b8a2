"""HTTP archives into the verified cache, against a loopback server."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from keepwarm.errors import DownloadError, ModelLoadError, ModelNotFoundError
from keepwarm.settings import DownloadSettings
from keepwarm.sources.download import fetch_archive, fetch_url, split_handle
from keepwarm.sources.resolve import resolve_uri


def _manifests(cache: Path) -> list[Path]:
    return sorted(cache.glob("[!.]*.json"))


def _assert_clean_and_empty(cache: Path) -> None:
    assert _manifests(cache) == []
    assert list(cache.glob(".tmp-*")) == []
    assert [p for p in cache.iterdir() if p.is_dir()] == []


def test_downloads_once_then_reuses(http_server, cache_dir, savedmodel_targz) -> None:
    url = http_server.add("/m.tar.gz", savedmodel_targz)
    seen: list[tuple[int, int | None]] = []
    first = resolve_uri(url, cache_dir=cache_dir, progress=lambda d, t: seen.append((d, t)))
    second = resolve_uri(url, cache_dir=cache_dir)
    assert first == second
    assert (first / "saved_model.pb").is_file()
    assert (first / "variables" / "variables.data-00000-of-00001").is_file()
    assert http_server.count() == 1
    assert seen[-1] == (len(savedmodel_targz), len(savedmodel_targz))
    [manifest] = _manifests(cache_dir)
    data = json.loads(manifest.read_text())
    assert data["handle"] == url
    assert data["archive_sha256"] == hashlib.sha256(savedmodel_targz).hexdigest()
    assert data["files"]["saved_model.pb"] == (first / "saved_model.pb").stat().st_size
    assert list(cache_dir.glob(".tmp-*")) == []


def test_env_cache_dir_is_used(http_server, cache_dir, savedmodel_targz, monkeypatch) -> None:
    monkeypatch.setenv("KEEPWARM_CACHE_DIR", str(cache_dir))
    path = resolve_uri(http_server.add("/m.tgz", savedmodel_targz))
    assert path.is_relative_to(cache_dir)


def test_hub_handle_asks_for_compressed_and_keeps_query(
    http_server, cache_dir, savedmodel_targz
) -> None:
    url = http_server.add("/google/mobilenet/1", savedmodel_targz) + "?variant=small"
    path = resolve_uri(url, cache_dir=cache_dir)
    assert (path / "saved_model.pb").is_file()
    [request] = http_server.requests
    assert "variant=small" in request
    assert "tf-hub-format=compressed" in request


def test_fetch_url_rules() -> None:
    assert fetch_url("https://h/m.tar.gz") == "https://h/m.tar.gz"
    assert fetch_url("https://h/m.TGZ?x=1") == "https://h/m.TGZ?x=1"
    assert fetch_url("https://h/m/1") == "https://h/m/1?tf-hub-format=compressed"
    assert fetch_url("https://h/m/1?a=b") == "https://h/m/1?a=b&tf-hub-format=compressed"
    assert fetch_url("https://h/m/1?tf-hub-format=x") == "https://h/m/1?tf-hub-format=x"


def test_split_handle() -> None:
    digest = "ab" * 32
    assert split_handle(f"https://h/m.tar.gz#sha256={digest.upper()}") == (
        "https://h/m.tar.gz",
        digest,
    )
    with pytest.raises(ValueError, match="sha256"):
        split_handle("https://h/m.tar.gz#md5=00")


def test_sha256_fragment_accepted(http_server, cache_dir, savedmodel_targz) -> None:
    url = http_server.add("/m.tar.gz", savedmodel_targz)
    digest = hashlib.sha256(savedmodel_targz).hexdigest()
    path = resolve_uri(f"{url}#sha256={digest}", cache_dir=cache_dir)
    assert (path / "saved_model.pb").is_file()
    assert http_server.requests == ["/m.tar.gz"]  # the fragment is never sent
    # the key ignores the fragment: the same entry serves the bare URL
    assert resolve_uri(url, cache_dir=cache_dir) == path
    assert http_server.count() == 1


def test_sha256_mismatch(http_server, cache_dir, savedmodel_targz) -> None:
    url = http_server.add("/m.tar.gz", savedmodel_targz)
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        resolve_uri(f"{url}#sha256={wrong}", cache_dir=cache_dir)
    assert wrong in str(info.value)
    assert hashlib.sha256(savedmodel_targz).hexdigest() in str(info.value)
    assert isinstance(info.value, ModelLoadError)
    _assert_clean_and_empty(cache_dir)


def test_short_body_against_content_length(http_server, cache_dir, savedmodel_targz) -> None:
    url = http_server.add(
        "/m.tar.gz", savedmodel_targz, content_length=len(savedmodel_targz) + 1000
    )
    with pytest.raises(DownloadError, match="truncated"):
        resolve_uri(url, cache_dir=cache_dir)
    _assert_clean_and_empty(cache_dir)
    http_server.add("/m.tar.gz", savedmodel_targz)  # the server recovers; the cache is usable
    assert (resolve_uri(url, cache_dir=cache_dir) / "saved_model.pb").is_file()


def test_truncated_archive(http_server, cache_dir, savedmodel_targz) -> None:
    url = http_server.add("/m.tar.gz", savedmodel_targz[: len(savedmodel_targz) // 2])
    with pytest.raises(DownloadError, match="truncated or corrupt"):
        resolve_uri(url, cache_dir=cache_dir)
    _assert_clean_and_empty(cache_dir)
    http_server.add("/m.tar.gz", savedmodel_targz)
    assert (resolve_uri(url, cache_dir=cache_dir) / "saved_model.pb").is_file()
    assert http_server.count() == 2


def test_not_an_archive(http_server, cache_dir) -> None:
    url = http_server.add("/m.tar.gz", b"<html>sign in</html>")
    with pytest.raises(DownloadError, match="truncated or corrupt"):
        resolve_uri(url, cache_dir=cache_dir)
    _assert_clean_and_empty(cache_dir)


def test_incomplete_savedmodel_archive(
    http_server, cache_dir, tmp_path, make_savedmodel, make_targz
) -> None:
    model = make_savedmodel(tmp_path / "two", shards=2)
    (model / "variables" / "variables.data-00001-of-00002").unlink()
    url = http_server.add("/m.tar.gz", make_targz(model))
    with pytest.raises(DownloadError, match=r"variables\.data-00001-of-00002"):
        resolve_uri(url, cache_dir=cache_dir)
    _assert_clean_and_empty(cache_dir)


def test_a_truncated_shard_in_an_archive_is_refused(
    http_server, cache_dir, tmp_path, make_savedmodel, make_targz
) -> None:
    # every file is there by name; the index says shard 0 must be longer than it is
    model = make_savedmodel(tmp_path / "m")
    shard = model / "variables" / "variables.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-1])
    url = http_server.add("/m.tar.gz", make_targz(model))
    with pytest.raises(DownloadError, match=r"not a complete SavedModel.*truncated"):
        resolve_uri(url, cache_dir=cache_dir)
    _assert_clean_and_empty(cache_dir)


@pytest.mark.parametrize("arcname", [".", "wrapped"])
def test_variables_without_a_graph_are_refused(
    http_server, cache_dir, tmp_path, make_savedmodel, make_targz, arcname: str
) -> None:
    model = make_savedmodel(tmp_path / "m")
    (model / "saved_model.pb").unlink()
    url = http_server.add("/m.tar.gz", make_targz(model, arcname=arcname))
    with pytest.raises(DownloadError, match=r"no saved_model\.pb"):
        resolve_uri(url, cache_dir=cache_dir)
    _assert_clean_and_empty(cache_dir)


def test_an_archive_over_the_extraction_cap_is_refused(
    http_server, cache_dir, savedmodel_targz
) -> None:
    url = http_server.add("/m.tar.gz", savedmodel_targz)
    with pytest.raises(DownloadError, match="more than 64 bytes"):
        fetch_archive(url, downloads=DownloadSettings(cache_dir=cache_dir, max_extract_bytes=64))
    _assert_clean_and_empty(cache_dir)
    assert fetch_archive(url, cache_dir=cache_dir).is_dir()


def test_single_top_level_dir_is_unwrapped(
    http_server, cache_dir, savedmodel_dir, make_targz
) -> None:
    url = http_server.add("/m.tar.gz", make_targz(savedmodel_dir, arcname="mobilenet"))
    path = resolve_uri(url, cache_dir=cache_dir)
    assert path.name == "mobilenet"
    assert (path / "saved_model.pb").is_file()


@pytest.mark.parametrize(
    "damage",
    [
        lambda entry, manifest: (entry / "variables" / "variables.data-00000-of-00001").unlink(),
        lambda entry, manifest: (entry / "saved_model.pb").write_bytes(b"x"),
        lambda entry, manifest: manifest.unlink(),
        lambda entry, manifest: manifest.write_text("{not json"),
    ],
    ids=["file-deleted", "size-changed", "manifest-missing", "manifest-corrupt"],
)
def test_corrupt_entry_is_fetched_again(
    http_server, cache_dir, savedmodel_targz, damage: Callable[[Path, Path], None]
) -> None:
    url = http_server.add("/m.tar.gz", savedmodel_targz)
    path = resolve_uri(url, cache_dir=cache_dir)
    [manifest] = _manifests(cache_dir)
    damage(path, manifest)
    again = resolve_uri(url, cache_dir=cache_dir)
    assert again == path
    assert http_server.count() == 2
    assert (again / "variables" / "variables.data-00000-of-00001").is_file()
    assert len(_manifests(cache_dir)) == 1


@pytest.mark.parametrize("how", ["argument", "env"])
def test_offline_fails_fast_when_not_cached(
    http_server, cache_dir, savedmodel_targz, monkeypatch, how: str
) -> None:
    url = http_server.add("/m.tar.gz", savedmodel_targz)
    if how == "env":
        monkeypatch.setenv("KEEPWARM_OFFLINE", "1")
    offline = True if how == "argument" else None
    with pytest.raises(ModelNotFoundError) as info:
        resolve_uri(url, cache_dir=cache_dir, offline=offline)
    assert "offline" in str(info.value)
    assert str(cache_dir) in str(info.value)
    assert http_server.count() == 0


def test_offline_uses_the_cache(http_server, cache_dir, savedmodel_targz) -> None:
    url = http_server.add("/m.tar.gz", savedmodel_targz)
    path = resolve_uri(url, cache_dir=cache_dir)
    assert resolve_uri(url, cache_dir=cache_dir, offline=True) == path
    assert http_server.count() == 1


def test_404_is_not_found(http_server, cache_dir) -> None:
    url = http_server.base + "/missing.tar.gz"
    with pytest.raises(ModelNotFoundError, match="404") as info:
        resolve_uri(url, cache_dir=cache_dir)
    assert url in str(info.value)
    _assert_clean_and_empty(cache_dir)


def test_server_error_is_download_error(http_server, cache_dir) -> None:
    url = http_server.add("/m.tar.gz", b"boom", status=503)
    with pytest.raises(DownloadError, match="503") as info:
        resolve_uri(url, cache_dir=cache_dir)
    assert url in str(info.value)


def test_unreachable_host_is_download_error(cache_dir) -> None:
    # A port bound but not listening, held for the call: a port let go could be taken
    # meanwhile by another process's server (port 0 is how every test server starts).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(DownloadError, match="failed"):
            resolve_uri(f"http://127.0.0.1:{port}/m.tar.gz", cache_dir=cache_dir)
