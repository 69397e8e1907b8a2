"""A real uvicorn server on uvloop with keepwarm's ``OneWriteProtocol``, whose writes are
recorded (a transport that passes every write on), for the protocol's tests."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import uvicorn
import uvloop

from keepwarm.http.messages import Receive, Scope, Send
from keepwarm.http.protocol import OneWriteProtocol
from keepwarm.http.timers import Limits

App = Callable[[Scope, Receive, Send], Any]


class Recorded:
    """A transport that records each write before passing it on."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self.writes = writes

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        chunks = [bytes(c) for c in chunks]
        self.writes.append(b"".join(chunks))
        self._transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def recording(
    writes: list[bytes], base: type[OneWriteProtocol] = OneWriteProtocol
) -> type[OneWriteProtocol]:
    class Recording(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(Recorded(transport, writes))  # type: ignore[arg-type]

    return Recording


async def serve(
    app: App,
    writes: list[bytes],
    keep_alive: float = 5.0,
    base: type[OneWriteProtocol] = OneWriteProtocol,
    limits: Limits | None = None,
) -> AsyncIterator[int]:
    given = Limits(keep_alive=keep_alive) if limits is None else limits
    config = uvicorn.Config(
        app,
        port=0,
        loop="none",
        http=functools.partial(recording(writes, base), limits=given),  # type: ignore[arg-type]
        lifespan="off",
        log_level="critical",
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await server.shutdown()


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> bytes:
    """One response with a Content-Length (``head``: to a HEAD request, no body)."""
    block = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(block.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return block + (b"" if head else await reader.readexactly(length))


async def exchange(port: int, request: bytes, *, until_eof: bool = False) -> bytes:
    """``request`` sent on a new connection; its response (``until_eof``: all that comes
    until the server closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    if until_eof:
        data = await asyncio.wait_for(reader.read(), 5)
    else:
        data = await read_response(reader, head=request.startswith(b"HEAD"))
    writer.close()
    return data


async def hang_up(writer: asyncio.StreamWriter, seen: list[Any]) -> None:
    """Closes the client's side, then waits (up to 2 s) until ``seen`` holds something."""
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.02)


def post(path: str, body: bytes, *extra: bytes) -> bytes:
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"host: x", *extra]
    return b"\r\n".join([*head, b"content-length: %d" % len(body), b"", body])


def run(
    app: App,
    talk: Callable[[int], Awaitable[Any]],
    keep_alive: float = 5.0,
    base: type[OneWriteProtocol] = OneWriteProtocol,
    limits: Limits | None = None,
) -> list[bytes]:
    """``talk(port)`` against ``app`` served (``keep_alive``: the connections' keep-alive
    time, unless ``limits`` gives all of them; ``base``: the protocol, ``OneWriteProtocol``
    or a subclass); the writes the server made."""
    writes: list[bytes] = []

    async def main() -> None:
        async for port in serve(app, writes, keep_alive, base, limits):
            await talk(port)

    uvloop.run(main())
    return writes
