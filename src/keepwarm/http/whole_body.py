"""A request's whole body, collected by the protocol for an app that reads all of it.

uvicorn hands a body to the app in pieces, one ``receive()`` each: every piece wakes the
app's task, and uvicorn stops reading the socket once 64 KiB wait unread, until the app
takes them. A MobileNetV2 JSON body (1.6 MB) took some 25 rounds of pause, wake-up,
``receive()`` and resumption on the event loop, and each byte was copied into uvicorn's
buffer, out of it into a ``bytes``, then joined by the app: 1.5-2 ms of loop time per
request at 32 clients.

``Collector.read(limit)`` (found in the request's scope, ``scope["extensions"]``
under ``WHOLE_BODY``) instead keeps the pieces the parser gives in a list and reads on
without pausing, up to ``limit`` bytes; the app's task wakes once, when the body is
complete, when it passes ``limit`` (reading then pauses: the rest is not read), or when the
client goes away. The body is joined once. ``OneWriteProtocol`` makes a collector per
request and hands it each piece of the body while a read is under way; otherwise uvicorn's
own buffer and flow control are used, as before (a pipelined request's body, an app that
answers without reading the body).

When the client declared the body's length and much of it is still to come, the rest is
read from the socket straight into the ``bytes`` the body becomes, with no piece made and
no join (``http/direct_body.py``): the protocol's ``read_into`` hands the connection to a
reader of that object until the body's last byte.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from keepwarm.errors import InvalidInputError
from keepwarm.http.direct_body import DIRECT_BYTES, writable_bytes
from keepwarm.http.messages import CLIENT_GONE, too_large

if TYPE_CHECKING:
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: ``read_into(view, start, keep)``: the protocol reads the rest of the current body into
#: ``view[start:]`` (of the ``bytes`` object ``keep``), then ends the message.
ReadInto = Callable[[memoryview, int, bytes], None]


class Collector:
    """One request's body, collected whole on demand (see the module docstring).

    It holds its cycle weakly: the cycle's scope holds the collector, and a strong
    reference back would make a cycle of objects per request that only the garbage
    collector frees."""

    __slots__ = ("_cycle", "_flow", "_read_into", "_resuming", "limit", "pieces", "size")

    def __init__(
        self,
        cycle: RequestResponseCycle,
        flow: FlowControl,
        read_into: ReadInto | None = None,
        resuming: Callable[[], None] | None = None,
    ) -> None:
        self._cycle = weakref.ref(cycle)
        self._flow = flow
        self._read_into = read_into if writable_bytes is not None else None
        self._resuming = resuming  # told when the read starts: the body's time runs again
        self.pieces: list[bytes | bytearray] | None = None  # a read is under way: the body
        self.size = 0
        self.limit = 0

    def take(self, piece: bytes) -> None:
        """A piece of the body, from the parser, while a read is under way."""
        pieces = self.pieces
        assert pieces is not None
        pieces.append(piece)
        self.size += len(piece)
        if self.size > self.limit:  # refused: nothing more is read, the app wakes now
            self._flow.pause_reading()
            cycle = self._cycle()
            if cycle is not None:
                cycle.message_event.set()

    async def read(self, limit: int, declared: int | None = None) -> bytes:
        """The whole body: ``PayloadTooLargeError`` past ``limit`` bytes,
        ``InvalidInputError`` when the client went away first. Sends ``100 Continue``
        first when the client waits for it. ``declared``: the length the client declared
        (Content-Length), at most ``limit``, if any."""
        cycle = self._cycle()
        if cycle is None:
            raise InvalidInputError(CLIENT_GONE)
        if cycle.waiting_for_100_continue and not cycle.transport.is_closing():
            cycle.transport.write(CONTINUE)
            cycle.waiting_for_100_continue = False
        if self._resuming is not None:
            self._resuming()
        held = cycle.body  # what was read before the app asked
        cycle.body = bytearray()
        pieces: list[bytes | bytearray] = [held] if held else []
        self.size = len(held)
        self.limit = limit
        if (
            cycle.more_body
            and declared is not None
            and declared - self.size >= DIRECT_BYTES
            and declared <= limit
            and self._read_into is not None
        ):
            return await self._read_in_place(cycle, held, declared)
        if cycle.more_body and self.size <= limit:
            self.pieces = pieces
            self._flow.resume_reading()
            event = cycle.message_event
            try:
                while (
                    cycle.more_body
                    and self.size <= limit
                    and not cycle.disconnected
                    and not cycle.response_complete
                ):
                    await event.wait()
                    event.clear()
            finally:
                self.pieces = None
        cycle.message_event.clear()  # as uvicorn's receive() leaves it
        if self.size > limit:
            raise too_large(limit, f"more than {limit} bytes")
        if cycle.disconnected or cycle.response_complete:
            raise InvalidInputError(CLIENT_GONE)
        if len(pieces) == 1 and type(pieces[0]) is bytes:
            return pieces[0]
        return b"".join(pieces)

    async def _read_in_place(
        self, cycle: RequestResponseCycle, held: bytes | bytearray, declared: int
    ) -> bytes:
        """The rest of a body of ``declared`` bytes read into the ``bytes`` it becomes."""
        assert writable_bytes is not None and self._read_into is not None
        body, view = writable_bytes(declared)
        start = len(held)
        view[:start] = held
        self._read_into(view, start, body)
        self._flow.resume_reading()
        event = cycle.message_event
        while cycle.more_body and not cycle.disconnected and not cycle.response_complete:
            await event.wait()
            event.clear()
        if cycle.disconnected or cycle.response_complete:
            raise InvalidInputError(CLIENT_GONE)
        self.size = declared
        return body
