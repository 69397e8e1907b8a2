"""A request cycle's transport that holds uvicorn's header block back until the body's
first write, so that a response goes to the socket in one write (``http/protocol.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

#: A body up to this size is joined to its header block (one copy, one buffer); a larger
#: one is written beside it (``writelines``: one vectored system call, no copy).
JOIN_BYTES = 64 * 1024


class HeldHead:
    """The transport of one request's cycle: the first write after its response started
    (uvicorn's header block) is held and sent with the next write, at the response's end,
    or before the transport closes; any other write goes straight through.

    It lets go of its cycle once the header block is seen: the two refer to each other
    until then, and a request's objects in a reference cycle are freed only by the
    garbage collector (a pass over every young object, paid per request)."""

    __slots__ = ("_cycle", "_head", "_then", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        cycle: RequestResponseCycle,
        then: Callable[[], None],
    ) -> None:
        self._transport = transport
        self._cycle: RequestResponseCycle | None = cycle  # None: the header block was seen
        self._then = then  # the cycle's own end-of-response callback
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) <= JOIN_BYTES:
                self._transport.write(head + data)
            else:
                self._transport.writelines((head, data))
        elif self._cycle is not None and self._cycle.response_started:
            self._cycle = None  # held once, at most
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
