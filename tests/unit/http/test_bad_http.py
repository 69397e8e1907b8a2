"""Bytes that are not HTTP/1.1 (the parser's errors) are answered as every other error:
``{"error": ...}`` naming what was wrong, then the connection closes; a URL past what the
parser can take is 414. uvicorn answered each with a text/plain "Invalid HTTP request
received." and closed at once.

A real uvicorn server on uvloop and real client sockets (``support.one_write``).
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest

from keepwarm.http.messages import Receive, Scope, Send
from support.one_write import run


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


def exchange_until_closed(request: bytes) -> bytes:
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := await asyncio.wait_for(reader.read(65536), 10):
                data += chunk
        got.append(data)
        writer.close()

    run(answer, talk)
    return got[0]


@pytest.mark.parametrize(
    ("request_bytes", "words"),
    [
        (b"FOO / HTTP/1.1\r\nhost: x\r\n\r\n", "Invalid method"),
        (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n", "Content-Length"),
        (
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
            "Duplicate Content-Length",
        ),
        (b"GET / HTTP/1.1\r\nhost: x\r\nbad header: y\r\n\r\n", "header"),
        (b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "chunk"),
        (b"\x16\x03\x01\x00\x05hello\r\n\r\n", "Invalid method"),
    ],
)
def test_bytes_that_are_not_http_are_a_json_400_naming_the_fault(
    request_bytes: bytes, words: str
) -> None:
    data = exchange_until_closed(request_bytes)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), data[:200]
    assert b"content-type: application/json" in head.lower()
    assert b"connection: close" in head.lower()
    message = orjson.loads(body)["error"]
    assert message.startswith("the request is not valid HTTP/1.1") and words in message


def test_a_url_too_long_for_the_parser_is_414() -> None:
    data = exchange_until_closed(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 "), data[:200]
    message = orjson.loads(body)["error"]
    assert "65535 bytes" in message and len(message) < 300


def test_a_bad_request_pipelined_behind_a_good_one_is_answered_after_it() -> None:
    """The answer to a bad request pipelined behind a good one follows the good one's."""
    data = exchange_until_closed(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nFOO / HTTP/1.1\r\n\r\n")
    first, _, rest = data.partition(b"ok")
    assert first.startswith(b"HTTP/1.1 200 ") and rest.startswith(b"HTTP/1.1 400 "), data
