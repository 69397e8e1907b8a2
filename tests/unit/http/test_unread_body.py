"""``Request.leaves_body``: an answer sent before a body of more than ``DROP_BODY_BYTES``
(or of unknown length) was read closes the connection (see ``http/app.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keepwarm.http.messages import DROP_BODY_BYTES, Message, Request


def _request(headers: list[tuple[bytes, bytes]], chunks: list[bytes] | None = None) -> Request:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks or []) - 1}
        for i, c in enumerate(chunks or [])
    ]

    async def receive() -> Message:
        return messages.pop(0)

    scope: dict[str, Any] = {"method": "POST", "headers": headers}
    return Request(scope, receive, {}, 64 * 1024 * 1024)


@pytest.mark.parametrize(
    ("headers", "leaves"),
    [
        ([], False),  # no body
        ([(b"content-length", b"0")], False),
        ([(b"content-length", str(DROP_BODY_BYTES).encode())], False),  # cheap to drop
        ([(b"content-length", str(DROP_BODY_BYTES + 1).encode())], True),  # ASGI: lowercased
        ([(b"content-length", b"12x")], True),  # not a length: not known to be small
        ([(b"transfer-encoding", b"chunked")], True),  # unknown length
    ],
)
def test_an_unread_body_closes_the_connection_when_large_or_unknown(
    headers: list[tuple[bytes, bytes]], leaves: bool
) -> None:
    assert _request(headers).leaves_body() is leaves


def test_a_body_read_whole_leaves_nothing() -> None:
    body = b"x" * (DROP_BODY_BYTES + 10)
    request = _request([(b"content-length", str(len(body)).encode())], [body[:5], body[5:]])
    assert request.leaves_body()
    assert asyncio.run(request.body()) == body
    assert not request.leaves_body()
