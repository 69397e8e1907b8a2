"""A request refused on its headers (its model's queue full): 503 with Retry-After before
its body is read. A large body is not read at all: the answer says ``Connection: close``
and the server closes the connection (``LINGER_SECONDS`` after the answer), so the loop
does not receive megabytes only to drop them; a client that sent its whole body at once,
or an HTTP client writing its body while it reads, still reads its 503 (closed at once,
aiohttp lost it to the reset in three runs of three). A small body is read and dropped,
and the same keep-alive connection serves the next request as usual."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
import requests

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


SMALL = orjson.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                                  "data": [[3, 1]]}]})  # fmt: skip
LARGE = SMALL + b" " * 2_000_000  # far past the server's 64 KiB read-ahead


def _connect(server: ServerProcess) -> socket.socket:
    address = urlsplit(server.url)
    return socket.create_connection((address.hostname, address.port), timeout=30)


@contextmanager
def _full(server: ServerProcess) -> Iterator[list[socket.socket]]:
    """``MAX_QUEUE`` requests admitted and still sending their bodies: the queue is full
    (their sockets closed on the way out)."""
    holding = []
    try:
        for _ in range(MAX_QUEUE):
            sock = _connect(server)
            sock.sendall(_head(len(SMALL)) + SMALL[:10])
            holding.append(sock)
        yield holding
    finally:
        for sock in holding:
            sock.close()


def _drain(holding: list[socket.socket]) -> None:
    """The held requests finish their bodies and are served."""
    for sock in holding:
        sock.sendall(SMALL[10:])
    for sock in holding:
        assert _response(sock)[0].startswith(b"HTTP/1.1 200")
        sock.close()


def _served(conn: socket.socket) -> None:
    conn.sendall(_head(len(SMALL)) + SMALL)
    status, _, body = _response(conn)
    assert status.startswith(b"HTTP/1.1 200"), body
    assert orjson.loads(body)["outputs"][0]["data"] == [6, 2]


def _closed(conn: socket.socket) -> bool:
    """Whether the server closed ``conn`` (end of stream or reset; a timeout is not)."""
    try:
        return conn.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_a_large_refused_body_is_never_read_and_the_connection_closes(
    server: ServerProcess,
) -> None:
    timed = metric(server, "keepwarm_refusal_seconds_count", model="slow")
    with _full(server) as holding:
        with _connect(server) as conn:
            conn.sendall(_head(len(LARGE)))  # headers only: the body is never sent
            status, headers, body = _response(conn)
            assert status.startswith(b"HTTP/1.1 503"), status
            assert headers[b"retry-after"] and b"queue" in body
            assert headers[b"connection"] == b"close"
            assert _closed(conn)  # without waiting for the 2 MB it was promised
        _drain(holding)
    # timed in the server, answered on its headers by the protocol or by its handler
    assert metric(server, "keepwarm_refusal_seconds_count", model="slow") == timed + 1
    with _connect(server) as conn:  # a new connection is served as usual
        _served(conn)
    assert metric(server, "keepwarm_batch_queue_depth", model="slow") == 0


def test_a_client_sending_its_whole_large_body_still_reads_its_503(
    server: ServerProcess,
) -> None:
    """The server closes (``LINGER_SECONDS`` after its answer) while the body is still
    arriving, which resets the connection: the answer was sent first, and a client
    writing and reading at once reads it every time."""
    with _full(server) as holding:
        for _ in range(20):
            with _connect(server) as conn:
                failed: list[BaseException] = []

                def send(conn: socket.socket = conn, failed: list[BaseException] = failed) -> None:
                    try:
                        conn.sendall(_head(len(LARGE)) + LARGE)
                    except OSError as exc:  # reset or broken pipe: the server closed
                        failed.append(exc)

                sender = threading.Thread(target=send)
                sender.start()
                status, headers, _ = _response(conn)
                sender.join(timeout=30)
                assert not sender.is_alive()
                assert status.startswith(b"HTTP/1.1 503"), status
                assert headers[b"connection"] == b"close"
        _drain(holding)


def test_a_small_refused_body_is_dropped_and_the_connection_serves_on(
    server: ServerProcess,
) -> None:
    with _full(server) as holding, _connect(server) as conn:
        conn.sendall(_head(len(SMALL)) + SMALL)
        status, headers, body = _response(conn)
        assert status.startswith(b"HTTP/1.1 503"), status
        assert headers[b"retry-after"] and b"queue" in body
        assert b"connection" not in headers  # kept alive: a small body is cheap to drop
        _drain(holding)
        _served(conn)  # the same connection, served as usual
    assert metric(server, "keepwarm_batch_queue_depth", model="slow") == 0


def test_an_http_client_reusing_its_connections_is_refused_then_served(
    server: ServerProcess,
) -> None:
    """aiohttp, one session: large bodies refused (each answer closes its connection, the
    session opens another), then, the queue drained, the same large body served."""
    url = server.url + URL

    async def post(session: aiohttp.ClientSession) -> tuple[int, str | None, bytes]:
        async with session.post(url, data=io.BytesIO(LARGE)) as reply:
            return reply.status, reply.headers.get("retry-after"), await reply.read()

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            with _full(server) as holding:
                refused = await asyncio.gather(*(post(session) for _ in range(6)))
                assert all(code == 503 and retry for code, retry, _ in refused), refused
                _drain(holding)
            code, _, body = await post(session)
            assert code == 200, body
            assert orjson.loads(body)["outputs"][0]["data"] == [6, 2]

    asyncio.run(run())


def test_a_client_that_sends_its_whole_body_before_reading_gets_its_503(
    server: ServerProcess,
) -> None:
    """requests (urllib3) writes the whole body, then reads the answer: past what the
    sockets' buffers hold (30 MB), its write cannot finish before the server closes, and
    it still reads the 503 it was sent before."""
    with _full(server) as holding:
        for body in (LARGE, SMALL + b" " * 30_000_000):
            reply = requests.post(server.url + URL, data=body, timeout=30)
            assert reply.status_code == 503 and reply.headers["retry-after"]
        _drain(holding)


def test_each_refusal_is_timed_in_the_server_from_its_headers(server: ServerProcess) -> None:
    """``keepwarm_refusal_seconds`` counts each 503 for a full queue, on both REST
    protocols, timed from the request's headers parsed: well under the 10 ms target
    here (nothing else runs), however long the unread body."""

    def count() -> float:
        return metric(server, "keepwarm_refusal_seconds_count", model="slow")

    def fast() -> float:
        return metric(server, "keepwarm_refusal_seconds_bucket", model="slow", le="0.01")

    before, before_fast = count(), fast()
    tf_head = _head(len(LARGE)).replace(URL.encode(), b"/v1/models/slow:predict")
    with _full(server) as holding:
        for head in (_head(len(LARGE)), _head(len(LARGE)), tf_head):
            with _connect(server) as conn:
                conn.sendall(head)
                status, _, body = _response(conn)
                assert status.startswith(b"HTTP/1.1 503"), body
        _drain(holding)
    assert count() == before + 3  # the drained requests, served, are not counted
    assert fast() == before_fast + 3
    assert metric(server, "keepwarm_refusal_seconds_sum", model="slow") > 0
