"""A request the app answers on its headers alone (its ``early_answer``: in the server, a
large body refused for a full queue, ``HttpApp.early_answer``) is answered by
``OneWriteProtocol`` in the callback that parsed those headers: the answer written with
``Connection: close``, the body left unread, the connection closed, and no task made for
the request (the app is never called for it). Every other request goes to the app."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from keepwarm.http.messages import Receive, Scope, Send
from keepwarm.http.protocol import OneWriteProtocol
from support.one_write import post, read_response, run

BODY = b"x" * 100_000  # past the server's 64 KiB read-ahead


class Refusing:
    """An ASGI app that answers ``/full`` on its headers (503) and anything else itself."""

    def __init__(self) -> None:
        self.called: list[str] = []

    def early_answer(self, scope: Mapping[str, Any]) -> tuple[int, list[Any], bytes] | None:
        if scope["path"] != "/full":
            return None
        headers = [(b"content-length", b"2"), (b"retry-after", b"1")]
        return 503, headers, b"{}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.called.append(scope["path"])
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


def early(app: Refusing) -> type[OneWriteProtocol]:
    """The protocol given the app's ``early_answer``, as ``keepwarm serve`` gives it."""

    class Early(OneWriteProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, early=app.early_answer, **kwargs)

    return Early


def test_an_early_answer_is_written_without_a_task_and_the_connection_closes() -> None:
    app = Refusing()
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/full", BODY)[:-50_000])  # the body not all sent
        got.append(await read_response(reader))
        got.append(await asyncio.wait_for(reader.read(), 5))  # closed, the rest unread
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/other", BODY))
        got.append(await read_response(reader))
        writer.close()

    run(app, talk, base=early(app))
    head, _, body = got[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503") and body == b"{}"
    assert b"retry-after: 1" in head and b"connection: close" in head
    assert got[1] == b""
    assert got[2].endswith(b"ok")
    assert app.called == ["/other"]  # the refused request never reached the app


def test_a_pipelined_request_answered_early_waits_for_the_one_before_it() -> None:
    """Behind an unanswered request on the same connection, the early answer waits its
    turn (written when the request's task would have started), so the first request's
    answer comes first."""
    app = Refusing()
    got: list[bytes] = []

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/first", b"{}") + post("/full", BODY))
        got.append(await read_response(reader))
        got.append(await read_response(reader))
        writer.close()

    run(app, talk, base=early(app))
    assert got[0].endswith(b"ok")
    assert got[1].startswith(b"HTTP/1.1 503")
    assert app.called == ["/first"]


def test_a_pipelined_request_answered_early_leaves_reading_stopped() -> None:
    """Once the early answer behind an earlier request is written, the connection reads
    no more (its body is left unread until the close), as when it is the only request:
    the earlier answer's completion does not turn reading back on."""
    made: list[OneWriteProtocol] = []
    reading: list[bool] = []
    second_head = asyncio.Event()  # the refused request's headers parsed: pipelined

    class Held(Refusing):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return
            self.called.append(scope["path"])
            await second_head.wait()  # the first answer waits for the second's head
            headers = [(b"content-length", b"2")]  # answered unread: its body is empty
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"ok"})

    app = Held()

    class Recorded(early(app)):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            made.append(self)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            if self.pipeline:
                second_head.set()

    async def talk(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/first", b"{}") + post("/full", BODY)[:-50_000])
        assert (await read_response(reader)).endswith(b"ok")
        assert (await read_response(reader)).startswith(b"HTTP/1.1 503")
        reading.append(made[0].transport.is_reading())  # type: ignore[attr-defined]
        writer.close()

    run(app, talk, base=Recorded)
    assert reading == [False]
    assert app.called == ["/first"]
