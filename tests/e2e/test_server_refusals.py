"""A request refused on its headers (its model's queue full) over HTTP/1.1 keep-alive:
503 with Retry-After before its body is read; the server then reads and drops the body
it did not need, and the same connection serves the next request as usual."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest

from support.batch_server_models import Gate, metric, place_logged_model
from support.server_process import ServerProcess

URL = "/v2/models/slow/infer"
MAX_QUEUE = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("refusals")
    gate = Gate(folder)
    batching = f"max_batch_size = 4\nmax_queue = {MAX_QUEUE}\nmax_delay_ms = 0\n"
    place_logged_model(
        folder / "models" / "slow", gate, folder / "ran.log", delay=0, batching=batching
    )
    process = ServerProcess(folder / "models", "--allow-unsafe")
    yield process
    process.stop()
    gate.close()


def _head(length: int) -> bytes:
    return (
        f"POST {URL} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _response(sock: socket.socket) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One whole response (status line, headers, a Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines)}
    length = int(headers[b"content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    assert len(rest) == length, "more than one response"
    return status, headers, rest


def test_a_refused_request_body_is_dropped_and_the_connection_serves_on(
    server: ServerProcess,
) -> None:
    address = urlsplit(server.url)
    small = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                                      "data": [[3, 1]]}]})  # fmt: skip
    large = small + b" " * 2_000_000  # far past the server's 64 KiB read-ahead
    holding = []
    try:
        for _ in range(MAX_QUEUE):  # admitted, still sending their bodies: the queue is full
            sock = socket.create_connection((address.hostname, address.port), timeout=30)
            sock.sendall(_head(len(small)) + small[:10])
            holding.append(sock)
        with socket.create_connection((address.hostname, address.port), timeout=30) as conn:
            conn.sendall(_head(len(large)))
            status, headers, body = _response(conn)  # before any of the body was sent
            assert status.startswith(b"HTTP/1.1 503"), status
            assert headers[b"retry-after"] and b"queue" in body
            assert headers.get(b"connection", b"keep-alive") != b"close"
            conn.sendall(large)  # the body the server did not need, read and dropped
            for sock in holding:
                sock.sendall(small[10:])
            for sock in holding:
                assert _response(sock)[0].startswith(b"HTTP/1.1 200")
            conn.sendall(_head(len(small)) + small)  # the same connection, served as usual
            status, _, body = _response(conn)
            assert status.startswith(b"HTTP/1.1 200"), body
            assert orjson.loads(body)["outputs"][0]["data"] == [6, 2]
    finally:
        for sock in holding:
            sock.close()
    assert metric(server, "keepwarm_batch_queue_depth", model="slow") == 0
