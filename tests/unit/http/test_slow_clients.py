"""Careless and hostile clients against ``OneWriteProtocol``: a connection that never
sends a request, a header block that trickles in or never ends, a body that stops coming.
Each is answered (408, 431) and closed within its time or size, so that it cannot hold a
connection and its buffers forever; a slow client that keeps sending, and a body the
server itself has not read yet, are not cut off.

A real uvicorn server on uvloop, real client sockets, the limits shrunk (``Limits``).
The clients' pauses (``asyncio.sleep``) are the slowness under test, not synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
import pytest

from keepwarm.errors import KeepwarmError
from keepwarm.http.messages import Receive, Request, Scope, Send, error_response
from keepwarm.http.protocol import OneWriteProtocol
from keepwarm.http.timers import Limits
from support.one_write import post, read_response, run

KEEP_ALIVE = 0.3
LIMIT_SECONDS = 0.6


#: Limits small enough for a test.
STRICT = Limits(KEEP_ALIVE, LIMIT_SECONDS, LIMIT_SECONDS, 16 * 1024)
#: The same with the default keep-alive time.
STRICT_KEPT = Limits(5.0, LIMIT_SECONDS, LIMIT_SECONDS, 16 * 1024)


def app_seeing(errors: list[str], wait: float = 0.0):  # type: ignore[no-untyped-def]
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        """Answers the body's length (after ``wait`` seconds), or the error of reading it."""
        if scope["type"] != "http":
            return
        await asyncio.sleep(wait)
        try:
            status, data = 200, b"%d" % len(await Request(scope, receive, {}, 1 << 24).body())
        except KeepwarmError as exc:
            errors.append(exc.message)
            response = error_response(exc, 1)
            status, data = response.status, response.body
        headers = [(b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return app


async def answer_then_close(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """The server's answer (``b""`` if none) and how long it took; then the connection
    must close (reset, when bytes the client sent are left unread)."""
    start = time.monotonic()
    first = await asyncio.wait_for(reader.read(1), 10)
    took = time.monotonic() - start
    if not first:
        return b"", took
    head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    data = head + await reader.readexactly(length)
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), 5) == b""
    return data, took


def error_of(answer: bytes) -> str:
    message: str = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    return message


def test_a_connection_that_never_sends_a_request_is_closed() -> None:
    got: list[tuple[bytes, float]] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got.append(await answer_then_close(reader))
        writer.close()

    run(app_seeing([]), talk, limits=STRICT)
    data, took = got[0]
    assert data == b"" and KEEP_ALIVE * 0.9 <= took < KEEP_ALIVE + 2.0


def test_a_header_block_that_trickles_in_is_answered_408_and_closed() -> None:
    """One byte every third of the keep-alive time: never idle, never complete."""
    got: list[tuple[bytes, float]] = []

    async def drip(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
        while True:
            await asyncio.sleep(KEEP_ALIVE / 3)
            writer.write(b"a")

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        dripping = asyncio.ensure_future(drip(writer))
        try:
            got.append(await answer_then_close(reader))
        finally:
            dripping.cancel()
            writer.close()

    run(app_seeing([]), talk, limits=STRICT)
    data, took = got[0]
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"connection: close" in data.lower()
    assert "header" in error_of(data) and f"{LIMIT_SECONDS:g} s" in error_of(data)
    assert LIMIT_SECONDS * 0.9 <= took < 2 * LIMIT_SECONDS + 2.0


def test_a_header_block_that_never_ends_is_answered_431() -> None:
    """Header lines sent without end (the server kept every one: 160 MB sent, 156 MB
    more resident) are refused once past the limit; nothing more is read."""
    got: list[bytes] = []

    async def flood(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n")
        for _ in range(1024):  # up to 4 MB: far past the limit
            writer.write(b"x-pad: " + b"a" * 4000 + b"\r\n")
            await writer.drain()

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        flooding = asyncio.ensure_future(flood(writer))
        try:
            got.append((await answer_then_close(reader))[0])
        finally:
            flooding.cancel()
            writer.close()

    run(app_seeing([]), talk, limits=STRICT_KEPT)
    assert got[0].startswith(b"HTTP/1.1 431 "), got[0][:200]
    assert "16384 bytes" in error_of(got[0])


def test_a_long_header_line_in_one_piece_is_answered_431() -> None:
    """One header field of 1 MB (the parser joins its pieces until the field ends)."""
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nx-long: " + b"a" * (1024 * 1024))
        got.append((await answer_then_close(reader))[0])
        writer.close()

    run(app_seeing([]), talk, limits=STRICT_KEPT)
    assert got[0].startswith(b"HTTP/1.1 431 "), got[0][:200]


def test_a_header_block_stalled_behind_a_slow_answer_is_answered_after_it() -> None:
    """A request the app answers in three limits, pipelined with the start of another
    that stalls: the first is answered, then the 408 (its time counted from that answer)."""
    got: list[tuple[bytes, float]] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/", b"") + b"GET / HTTP/1.1\r\nhost: x\r\n")
        got.append((await read_response(reader), 0.0))
        got.append(await answer_then_close(reader))
        writer.close()

    run(app_seeing([], wait=3 * LIMIT_SECONDS), talk, limits=STRICT)
    assert got[0][0].startswith(b"HTTP/1.1 200 ") and got[0][0].endswith(b"\r\n\r\n0")
    assert got[1][0].startswith(b"HTTP/1.1 408 "), got[1]
    assert LIMIT_SECONDS * 0.9 <= got[1][1] < 2 * LIMIT_SECONDS + 2.0


@pytest.mark.parametrize(("declared", "sent"), [(1000, 100), (1024 * 1024, 200_000)])
def test_a_body_that_stops_coming_is_answered_408_and_the_read_fails(
    declared: int, sent: int
) -> None:
    """Small (the parser's pieces) and large (read in place) bodies alike."""
    got: list[tuple[bytes, float]] = []
    errors: list[str] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/", b"x" * declared)[: -declared + sent])
        got.append(await answer_then_close(reader))
        writer.close()

    run(app_seeing(errors), talk, limits=STRICT)
    data, took = got[0]
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert "body" in error_of(data)
    assert LIMIT_SECONDS * 0.9 <= took < 2 * LIMIT_SECONDS + 2.0
    assert errors == ["the client went away before sending its body"]


def test_a_slow_body_that_keeps_coming_is_read_whole() -> None:
    """Pieces every half of the limit, for three times the limit in all."""
    got: list[bytes] = []
    body = b"y" * 300_000
    request = post("/", body)
    pieces = 6

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        step = len(request) // pieces + 1
        for i in range(0, len(request), step):
            writer.write(request[i : i + step])
            await asyncio.sleep(LIMIT_SECONDS / 2)
        got.append(await read_response(reader))
        writer.close()

    run(app_seeing([]), talk, limits=STRICT)
    assert got[0].startswith(b"HTTP/1.1 200 ") and got[0].endswith(b"\r\n\r\n300000")


def test_a_body_the_server_has_not_read_yet_is_not_the_clients_delay() -> None:
    """The app asks for the body three limits after the headers: the server stopped
    reading meanwhile (past 64 KiB), so the client could not send; the body is read."""
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/", b"z" * 1_000_000))
        got.append(await read_response(reader))
        writer.close()

    run(app_seeing([], wait=3 * LIMIT_SECONDS), talk, limits=STRICT)
    assert got[0].startswith(b"HTTP/1.1 200 ") and got[0].endswith(b"\r\n\r\n1000000")


class Queueing(OneWriteProtocol):
    """The protocol, noting the most requests it ever held queued (pipelined)."""

    most = 0

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        Queueing.most = max(Queueing.most, len(self.pipeline))


def test_pipelined_requests_are_parsed_no_faster_than_they_are_answered() -> None:
    """uvicorn resumed reading after every answer, with requests still queued: each
    answer let another read's worth of pipelined requests be parsed and queued (a client
    that sent small requests without reading answers grew the server by 220 MB). Reading
    now resumes when the queue is empty: at most one read's requests wait."""
    request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
    count = 40_000
    got: list[int] = []
    Queueing.most = 0

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request * count)
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n0"
        data = await asyncio.wait_for(reader.readexactly(len(answer) * count), 60)
        got.append(data.count(answer))
        writer.close()

    run(app_seeing([]), talk, base=Queueing)
    assert got == [count]
    assert Queueing.most <= 256 * 1024 // len(request) + 1, Queueing.most
