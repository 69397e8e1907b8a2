"""``keepwarm serve``'s connection limits set small (``--header-timeout``,
``--body-timeout``, ``--keep-alive-timeout`` flags, ``max_header_bytes`` from the
environment) take effect on a real server process: a stalled header block or body is
answered 408, a large header block 431, an idle connection is closed, each within about
the limit, not the defaults' 30 s and 5 s."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest

from support.server_process import ServerProcess

LIMIT = 0.5
#: A limit is enforced between its time and about twice that; the rest is slack for a
#: loaded machine, far below the defaults.
WITHIN = 2 * LIMIT + 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("limits") / "models"
    root.mkdir()
    flags = ["--header-timeout", str(LIMIT), "--body-timeout", str(LIMIT)]
    flags += ["--keep-alive-timeout", str(LIMIT)]
    process = ServerProcess(root, *flags, env={"KEEPWARM_SERVER__MAX_HEADER_BYTES": "2KiB"})
    yield process
    process.stop()


def _connect(server: ServerProcess) -> socket.socket:
    address = urlsplit(server.url)
    return socket.create_connection((address.hostname, address.port), timeout=30)


def _until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """All the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


def _error(answer: bytes) -> str:
    message: str = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    return message


def test_a_header_block_slower_than_the_setting_is_answered_408(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n")
        data, took = _until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert f"{LIMIT:g} s" in _error(data)
    assert LIMIT * 0.9 <= took < WITHIN


def test_a_body_stalled_longer_than_the_setting_is_answered_408(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        data, took = _until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert "body" in _error(data) and f"{LIMIT:g} s" in _error(data)
    assert LIMIT * 0.9 <= took < WITHIN


def test_a_header_block_over_the_setting_is_answered_431(server: ServerProcess) -> None:
    """Past the server's first read (the count starts after it), well within the time."""
    with _connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 200_000)
        data, _ = _until_closed(sock)
    assert data.startswith(b"HTTP/1.1 431 "), data
    assert "2048 bytes" in _error(data)


def test_a_header_block_under_the_setting_is_served(server: ServerProcess) -> None:
    answer = server.get("/v2/health/live", headers={"x-pad": "a" * 1024})
    assert answer.status_code == 200


def test_an_idle_connection_is_closed_after_the_keep_alive_setting(server: ServerProcess) -> None:
    with _connect(server) as sock:
        data, took = _until_closed(sock)
    assert data == b"" and LIMIT * 0.9 <= took < WITHIN
