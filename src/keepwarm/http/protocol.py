"""uvicorn's httptools protocol, with each response written to the socket once.

uvicorn writes a response's status line and headers (``http.response.start``) and its
body (``http.response.body``) with two ``transport.write`` calls, and uvloop sends each at
once: two system calls, two packets, and on loopback two wake-ups of the client, all with
the interpreter lock held (at 32 clients on the MLP the header write alone was a quarter
of the event loop's time). ``OneWriteProtocol`` gives each request's cycle a transport
that holds the header block back and sends it with the first body write, in one system
call; the header block is sent alone when the response ends without a body write (HEAD)
or the connection is closed, so nothing is ever left unsent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

#: A body up to this size is joined to its header block (one copy, one buffer); a larger
#: one is written beside it (``writelines``: one vectored system call, no copy).
JOIN_BYTES = 64 * 1024


class OneWriteProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose responses each go out in one write (see the module
    docstring); everything else is uvicorn's."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before:  # a request's cycle (not an upgrade)
            writer = HeldHead(self.transport, cycle, cycle.on_response)
            cycle.transport = writer  # type: ignore[assignment]
            cycle.on_response = writer.on_response


class HeldHead:
    """The transport of one request's cycle: the first write after its response started
    (uvicorn's header block) is held and sent with the next write, at the response's end,
    or before the transport closes; any other write goes straight through."""

    __slots__ = ("_cycle", "_head", "_held", "_then", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        cycle: RequestResponseCycle,
        then: Callable[[], None],
    ) -> None:
        self._transport = transport
        self._cycle = cycle
        self._then = then  # the cycle's own end-of-response callback
        self._head: bytes | None = None
        self._held = False  # the header block was seen (it is held once, at most)

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) <= JOIN_BYTES:
                self._transport.write(head + data)
            else:
                self._transport.writelines((head, data))
        elif not self._held and self._cycle.response_started:
            self._held = True
            self._head = data
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send the header block if it is still held."""
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def on_response(self) -> None:
        """The cycle's end-of-response callback: the header block sent, then its own."""
        self.flush()
        self._then()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
