"""Large bodies of declared length read straight into their ``bytes`` (``http/direct_body.py``).

A real uvicorn server with keepwarm's ``OneWriteProtocol``, real client sockets, the app
reading with ``Request.body``. The protocol counts the body bytes its parser hands on: read
in place, only what arrived before the app asked for the body goes through the parser (the
ordinary way, every byte does)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from keepwarm.errors import KeepwarmError
from keepwarm.http.direct_body import writable_bytes
from keepwarm.http.messages import Receive, Request, Scope, Send, error_response
from keepwarm.http.protocol import OneWriteProtocol
from support.one_write import exchange, hang_up, post, read_response, run, serve

BIG = os.urandom(1024 * 1024 + 3)
LIMIT = 4 * 1024 * 1024


class Seen:
    parsed = 0  # body bytes the parser handed on
    errors: list[str] = []
    types: list[type] = []


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Seen.parsed = 0
    Seen.errors = []
    Seen.types = []


class Counting(OneWriteProtocol):
    def on_body(self, body: bytes) -> None:
        Seen.parsed += len(body)
        super().on_body(body)


def app_with(wait: float | None = None):  # type: ignore[no-untyped-def]
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        """Answers the body's length and SHA-256, or the error (``wait``: gives up
        reading after that many seconds, and answers 408 on a connection kept open)."""
        if scope["type"] != "http":
            return
        request = Request(scope, receive, {}, LIMIT)
        try:
            body = await asyncio.wait_for(request.body(), wait)
            Seen.types.append(type(body))
            status, data = 200, digest(body)
        except KeepwarmError as exc:
            Seen.errors.append(exc.message)
            response = error_response(exc, 1)
            status, data = response.status, response.body
        except TimeoutError:
            status, data = 408, b"slow"
        headers = [(b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return app


def digest(body: bytes) -> bytes:
    return b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())


async def slowly(writer: asyncio.StreamWriter, data: bytes, step: int = 100_000) -> None:
    for i in range(0, len(data), step):
        writer.write(data[i : i + step])
        await writer.drain()
        await asyncio.sleep(0.005)


def test_a_large_body_goes_past_the_parser_into_its_bytes() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await slowly(writer, post("/", BIG))
        got.append(await read_response(reader))
        writer.close()

    run(app_with(), talk, base=Counting)
    assert got[0].startswith(b"HTTP/1.1 200 ")
    assert got[0].endswith(b"\r\n\r\n" + digest(BIG))
    assert Seen.types == [bytes]
    assert Seen.parsed < len(BIG) // 2  # every byte, read the ordinary way


def test_pipelined_requests_after_a_body_read_in_place_are_parsed() -> None:
    got: list[bytes] = []
    first, second = BIG[:500_000], BIG[500_000:]

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/", first)[:1000])
        await writer.drain()
        await asyncio.sleep(0.05)  # the app asks for the body with most of it to come
        writer.write(post("/", first)[1000:] + post("/", second) + post("/", b"x"))
        for _ in range(3):
            got.append(await read_response(reader))
        writer.close()

    run(app_with(), talk, base=Counting)
    assert [g.split(b"\r\n\r\n")[1] for g in got] == [digest(first), digest(second), digest(b"x")]
    assert Seen.parsed < len(second) + 100_000  # the first body went past the parser


def test_a_truncated_body_fails_the_read_and_the_server_goes_on() -> None:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await slowly(writer, post("/", BIG)[:400_000])
        await asyncio.sleep(0.05)
        await hang_up(writer, Seen.errors)
        got.append(await exchange(port, post("/", BIG[:300_000])))

    run(app_with(), talk, base=Counting)
    assert Seen.errors == ["the client went away before sending its body"]
    assert got[0].endswith(b"\r\n\r\n" + digest(BIG[:300_000]))


def test_a_client_that_stops_sending_mid_body_fails_the_read() -> None:
    """End of input (a half-closed socket) while the body is read in place."""

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await slowly(writer, post("/", BIG)[:400_000])
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without an answer
        writer.close()

    run(app_with(), talk, base=Counting)
    assert Seen.errors == ["the client went away before sending its body"]


def test_a_read_given_up_mid_body_leaves_the_connection_usable() -> None:
    """The app stops waiting (408) with the body half read: the rest is still read into
    the abandoned object, and the next request on the connection is parsed from its
    first byte."""
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = post("/", BIG)
        await slowly(writer, request[:300_000])
        got.append(await read_response(reader))
        writer.write(request[300_000:] + post("/", BIG[:200_000]))
        got.append(await read_response(reader))
        writer.close()

    run(app_with(wait=0.3), talk, base=Counting)
    assert got[0].startswith(b"HTTP/1.1 408 ")
    assert got[1].endswith(b"\r\n\r\n" + digest(BIG[:200_000]))


def test_a_body_is_read_in_place_on_asyncio_own_loop_too() -> None:
    got: list[bytes] = []

    async def main() -> None:
        async for port in serve(app_with(), [], 5.0, Counting):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await slowly(writer, post("/", BIG) + post("/", b"after"))
            got.append(await read_response(reader))
            got.append(await read_response(reader))
            writer.close()

    asyncio.run(main())
    assert got[0].endswith(b"\r\n\r\n" + digest(BIG))
    assert got[1].endswith(b"\r\n\r\n" + digest(b"after"))
    assert Seen.parsed < len(BIG) // 2


def test_writable_bytes_are_fresh_objects_that_behave_as_bytes_once_filled() -> None:
    assert writable_bytes is not None
    first, view = writable_bytes(100_000)
    second, other = writable_bytes(100_000)
    assert first is not second
    view[:] = b"a" * 100_000
    other[:] = b"b" * 100_000
    assert first == b"a" * 100_000 and second == b"b" * 100_000
    assert hash(first) == hash(b"a" * 100_000)
    assert type(first) is bytes and not view.readonly
