"""Bodies read whole through ``OneWriteProtocol``'s collector (``http/whole_body.py``).

A real uvicorn server on uvloop, real client sockets; the app reads the body with
``Request.body`` (the limit, decompression and errors of the server's app). The protocol
counts its pauses of reading and the app its ``receive()`` calls: uvicorn's own way, a
1 MB body is some 16 pauses and as many ``receive()`` calls; read whole, at most one pause
(before the app asked for the body) and no ``receive()``."""

from __future__ import annotations

import asyncio
import gc
import gzip
import hashlib
import os
import zlib

import pytest
from uvicorn.protocols.http.flow_control import FlowControl

from keepwarm.errors import KeepwarmError
from keepwarm.http.messages import (
    Receive,
    Request,
    Scope,
    Send,
    answer_and_close,
    error_response,
)
from keepwarm.http.protocol import OneWriteProtocol
from support.one_write import hang_up, post, read_response, run

LIMIT = 256 * 1024
BIG = os.urandom(1024 * 1024 - 7)


class Seen:
    """What the server did: reading pauses, the app's ``receive()`` calls, its errors."""

    pauses = 0
    receives = 0
    errors: list[KeepwarmError] = []  # reset by the fixture


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Seen.pauses = Seen.receives = 0
    Seen.errors = []


class Counting(OneWriteProtocol):
    """``OneWriteProtocol`` whose pauses of reading are counted."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = CountedFlow(transport)


class CountedFlow(FlowControl):
    def pause_reading(self) -> None:
        Seen.pauses += 1
        super().pause_reading()


def app_with(limit: int):  # type: ignore[no-untyped-def]
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        """Answers the body's length and SHA-256, or the error of ``Request.body``."""
        if scope["type"] != "http":
            return

        async def counted() -> dict[str, object]:
            Seen.receives += 1
            return dict(await receive())

        request = Request(scope, counted, {}, limit)
        try:
            body = await request.body()
            status, data = 200, b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
        except KeepwarmError as exc:
            Seen.errors.append(exc)
            response = error_response(exc, 1)
            status, data = response.status, response.body
        headers = [(b"content-length", str(len(data)).encode())]
        start = {"type": "http.response.start", "status": status, "headers": headers}
        if request.leaves_body():
            headers.append((b"connection", b"close"))
            await answer_and_close(send, start, data)
            return
        await send(start)
        await send({"type": "http.response.body", "body": data})

    return app


def digest(body: bytes) -> bytes:
    return b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


def chunked(body: bytes, size: int) -> bytes:
    pieces = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
              for i in range(0, len(body), size)]  # fmt: skip
    return b"".join(pieces) + b"0\r\n\r\n"


async def one(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await read_response(reader)
    finally:
        writer.close()


def test_a_large_body_is_read_without_pauses_or_receive_calls() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        got.append(await one(port, post("/", BIG)))

    run(app_with(2 * len(BIG)), talk, base=Counting)
    assert got[0].startswith(b"HTTP/1.1 200 ")
    assert got[0].endswith(b"\r\n\r\n" + digest(BIG))
    assert Seen.pauses <= 1  # at most once, past 64 KiB, before the app asked for it
    assert Seen.receives == 0


def test_a_chunked_body_in_many_pieces_is_read_whole() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        head = b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        got.append(await one(port, head + chunked(BIG[:200_000], 999)))

    run(app_with(LIMIT), talk, base=Counting)
    assert got[0].endswith(b"\r\n\r\n" + digest(BIG[:200_000]))
    assert Seen.receives == 0


def test_a_body_sent_slowly_in_pieces_is_read_whole() -> None:
    got: list[bytes] = []
    body = BIG[:300_000]

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = post("/", body)
        for i in range(0, len(request), 70_000):
            writer.write(request[i : i + 70_000])
            await writer.drain()
            await asyncio.sleep(0.01)
        got.append(await read_response(reader))
        writer.close()

    run(app_with(len(body)), talk, base=Counting)
    assert got[0].endswith(b"\r\n\r\n" + digest(body))
    assert Seen.pauses <= 1
    assert Seen.receives == 0


def test_a_chunked_body_over_the_limit_is_refused_and_reading_stops() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        head = b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + chunked(BIG, 4096))
        got.append(await read_response(reader))  # before the close, the rest unread
        writer.close()

    run(app_with(LIMIT), talk, base=Counting)
    assert got[0].startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in got[0]
    assert [type(e).__name__ for e in Seen.errors] == ["PayloadTooLargeError"]
    assert Seen.pauses >= 1


def test_a_gzip_body_over_the_limit_once_decompressed_is_refused() -> None:
    got: list[bytes] = []
    packed = gzip.compress(b"0" * (LIMIT + 1))
    assert len(packed) < LIMIT

    async def talk(port: int) -> None:
        got.append(await one(port, post("/", packed, b"content-encoding: gzip")))
        got.append(
            await one(port, post("/", gzip.compress(BIG[: LIMIT // 2]), b"content-encoding: gzip"))
        )

    run(app_with(LIMIT), talk, base=Counting)
    assert got[0].startswith(b"HTTP/1.1 413 ")
    assert b"after decompression" in got[0]
    assert got[1].endswith(b"\r\n\r\n" + digest(BIG[: LIMIT // 2]))


def test_gzip_members_are_one_body_and_bytes_after_the_data_are_refused() -> None:
    """RFC 1952: a gzip body of several members is their contents joined (the first
    member alone was taken, the rest dropped unread); bytes that are no member after the
    compressed data are a 400 (they were dropped), as in a deflate body."""
    first, second = BIG[:1000], BIG[1000:3000]
    members = gzip.compress(first) + gzip.compress(second)
    got: list[bytes] = []

    async def talk(port: int) -> None:
        got.append(await one(port, post("/", members, b"content-encoding: gzip")))
        tailed = gzip.compress(first) + b"garbage"
        got.append(await one(port, post("/", tailed, b"content-encoding: gzip")))
        tailed = zlib.compress(first) + b"garbage"
        got.append(await one(port, post("/", tailed, b"content-encoding: deflate")))
        over = members + gzip.compress(b"0" * LIMIT)  # the members' sum is over the limit
        got.append(await one(port, post("/", over, b"content-encoding: gzip")))

    run(app_with(LIMIT), talk, base=Counting)
    assert got[0].endswith(b"\r\n\r\n" + digest(first + second)), got[0]
    for answer in got[1:3]:
        assert answer.startswith(b"HTTP/1.1 400 ") and b"after the compressed data" in answer
    assert got[3].startswith(b"HTTP/1.1 413 ") and b"after decompression" in got[3]


def test_a_client_that_closes_mid_body_fails_the_read() -> None:
    async def talk(port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/", BIG)[:500_000])
        await writer.drain()
        await asyncio.sleep(0.2)
        await hang_up(writer, Seen.errors)

    run(app_with(2 * len(BIG)), talk, base=Counting)
    assert [e.message for e in Seen.errors] == ["the client went away before sending its body"]


def test_pipelined_requests_with_large_bodies_each_read_whole() -> None:
    got: list[bytes] = []
    first, second = BIG[:200_000], BIG[200_000:400_000]

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/", first) + post("/", second) + post("/", b""))
        for _ in range(3):
            got.append(await read_response(reader))
        writer.close()

    run(app_with(LIMIT), talk, base=Counting)
    assert [g.split(b"\r\n\r\n")[1] for g in got] == [digest(first), digest(second), digest(b"")]


def test_100_continue_is_sent_before_a_large_body_is_read() -> None:
    got: list[bytes] = []
    body = BIG[:LIMIT]

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: %d\r\n\r\n"
        writer.write(head % len(body))
        got.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
        writer.write(body)
        got.append(await read_response(reader))
        writer.close()

    run(app_with(LIMIT), talk, base=Counting)
    assert got[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert got[1].endswith(b"\r\n\r\n" + digest(body))


def test_requests_read_whole_leave_no_cycle_to_the_garbage_collector() -> None:
    """The collector holds its cycle weakly: of three requests on one connection only the
    last cycle (its connection's, in a cycle of uvicorn's own) is left to the collector."""

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(post("/", BIG[:100_000]))
            assert (await read_response(reader)).endswith(digest(BIG[:100_000]))
        writer.close()

    gc.collect()
    gc.disable()
    try:
        run(app_with(LIMIT), talk, base=Counting)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left.count("RequestResponseCycle") <= 1
    assert left.count("Collector") <= 1
