"""Every remote fetch failure is a DownloadError naming the URL (without credentials) and
the cause, whatever the protocol: fsspec backends raise what they like."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import keepwarm
from keepwarm.errors import DownloadError
from keepwarm.sources.remote import copy_to_cache, list_remote_dir
from keepwarm.sources.resolve import redact_url


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_ftp_to_a_closed_port_is_a_download_error_without_the_password(
    closed_port: int, tmp_path: Path
) -> None:
    url = f"ftp://reader:s3cret@127.0.0.1:{closed_port}/models/m"
    for fetch in (
        lambda: keepwarm.load(url, cache=keepwarm.ModelCache()),
        lambda: copy_to_cache(url, tmp_path),
        lambda: list_remote_dir(url),
    ):
        with pytest.raises(DownloadError) as info:
            fetch()
        message = info.value.message
        assert f"ftp://127.0.0.1:{closed_port}/models/m" in message, message
        assert "Connection refused" in message or "ConnectionRefusedError" in message, message
        assert "s3cret" not in message and "reader" not in message, message
        assert info.value.__cause__ is not None


def test_an_unknown_protocol_is_a_download_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        keepwarm.load("nosuchproto://bucket/model", cache=keepwarm.ModelCache())
    assert "nosuchproto://bucket/model" in info.value.message
    assert "unknown protocol 'nosuchproto'" in info.value.message, info.value.message
    with pytest.raises(DownloadError, match="nosuchproto"):
        copy_to_cache("nosuchproto://bucket/model", tmp_path)


def test_a_backend_that_cannot_be_built_is_a_download_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:  # fsspec's github:// needs org and repo
        copy_to_cache("github://x/y", tmp_path)
    assert "github://x/y" in info.value.message and "TypeError" in info.value.message


def test_redact_url_drops_credentials_only() -> None:
    assert redact_url("s3://bucket/m") == "s3://bucket/m"
    assert redact_url("ftp://u:p@host:21/a?b=1") == "ftp://host:21/a?b=1"
    assert redact_url("http://token@example.com/m.tar.gz") == "http://example.com/m.tar.gz"
    assert redact_url("/local/path") == "/local/path"


def test_http_errors_name_the_url_without_credentials(closed_port: int) -> None:
    url = f"http://reader:s3cret@127.0.0.1:{closed_port}/m.tar.gz"
    with pytest.raises(DownloadError) as info:
        keepwarm.load(url, cache=keepwarm.ModelCache())
    assert f"127.0.0.1:{closed_port}/m.tar.gz" in info.value.message, info.value.message
    assert "s3cret" not in info.value.message and "reader" not in info.value.message
