"""uvicorn's httptools protocol, with each response written to the socket once.

uvicorn writes a response's status line and headers (``http.response.start``) and its
body (``http.response.body``) with two ``transport.write`` calls, and uvloop sends each at
once: two system calls, two packets, and on loopback two wake-ups of the client, all with
the interpreter lock held (at 32 clients on the MLP the header write alone was a quarter
of the event loop's time). ``OneWriteProtocol`` gives each request's cycle a transport
that holds the header block back and sends it with the first body write, in one system
call; the header block is sent alone when the response ends without a body write (HEAD)
or the connection is closed, so nothing is ever left unsent.

Each connection has one timer (``http/timers.py``): keep-alive, and the limits on slow
or endless requests and on answers a client does not read, which are ``[server]``
settings (``timers.Limits``). A request's limit passed is answered here: ``{"error":
...}`` with 408 or 431, then the connection is closed ``LINGER_SECONDS`` later, unread.
The cost per request is a few attribute writes and two or three reads of the loop's
clock; ``bench/ab.py`` (MLP, v2 JSON, 5 rounds of 3 s, machine load 5-7) read req/s 1.04x
and CPU per request 0.98x of the version before the limits at c=1, 1.00x and 1.10x at
c=32 (loop time per request 1.07x), in one run with the sides' order rotating: the c=32
CPU figure wants a run on a quieter machine before it is trusted either way.

A request the app answers on its headers alone (``early``, the app's ``early_answer``: a
large body refused for a full queue) is answered in the callback that parsed them, with no
task made for it: the answer written with ``Connection: close``, the body left unread, the
connection closed ``LINGER_SECONDS`` later, as ``refuse`` does. Through a task, the 503
waited for the loop's next pass over its ready tasks after the headers were parsed.

Each request's scope also carries a ``Collector`` (``http/whole_body.py``): an app that
reads the whole body gets it in one piece, read without uvicorn's pause every 64 KiB, and
the rest of a large body of declared length is read straight into the ``bytes`` it
becomes (``read_into``, ``http/direct_body.py``); and the instant its headers were parsed,
from which a refusal is timed (``HEADERS_READ``).

A resolved inference request with a small declared body takes the lean path instead
(``http/lean.py``; the connection's side in ``http/lean_conn.py``): no uvicorn cycle, no
ASGI messages; a ``LeanCycle`` stands where the cycle would, and the answer is written
once its handler returns (``lean_answered``), or sent by the thread that encoded it, the
loop writing what the socket did not take (``http/answer_here.py``). A lean request
pipelined behind another is queued as uvicorn queues one, and started on the lean path
once the one before it is answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    RequestResponseCycle,
)

from keepwarm.http.direct_body import BodyInto
from keepwarm.http.held_head import HeldHead
from keepwarm.http.lean import LeanCycle
from keepwarm.http.messages import HEADERS_READ, WHOLE_BODY
from keepwarm.http.refusals import Refusing
from keepwarm.http.timers import ConnectionTimer, Limits
from keepwarm.http.whole_body import Collector

#: The limits of a connection unless the server gives others (``[server]`` settings).
DEFAULT_LIMITS = Limits()
#: An app's ``early_answer(scope)``: the status, header fields and body of its answer to
#: a request on its headers alone (the connection then closes), or None: the app's task.
Early = Callable[[Mapping[str, object]], "tuple[int, list[tuple[bytes, bytes]], bytes] | None"]


class OneWriteProtocol(Refusing):
    """``HttpToolsProtocol`` whose responses each go out in one write, with one timer per
    connection (keep-alive, and the limits on slow or endless requests), and whose bodies
    can be read whole (see the module docstring); everything else is uvicorn's."""

    def __init__(
        self,
        *args: Any,
        limits: Limits = DEFAULT_LIMITS,
        early: Early | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._collector: Collector | None = None  # the body being parsed's, if any
        self._timer = ConnectionTimer(self, limits)  # started with the connection
        self._refused = False  # answered 408, 431 or early: nothing more is read
        self._early = early  # the app's answer to a request on its headers alone, if any
        self._bad: tuple[int, str] | None = None  # not HTTP: answered after those before
        self._head_size = 0  # the request line's and header fields' bytes, parsed so far

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer.start()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._collector = None  # it refers back to this protocol
        self._timer.stop()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        timer = self._timer
        timer.bytes_read(len(data))
        super().data_received(data)
        if timer.head_too_large():
            self.refuse(431, self._head_too_large())

    def pause_writing(self) -> None:
        super().pause_writing()
        self._timer.writing_paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._timer.writing_resumed()

    def note_read(self) -> None:
        """Bytes of the body arrived (``BodyInto``), or the server resumes reading it."""
        self._timer.note_read()

    def _unset_keepalive_if_required(self) -> None:
        """uvicorn calls this as bytes arrive: the connection is not idle now."""
        self._timer.busy()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._timer.head_began()
        self._head_size = 0

    def on_response_complete(self) -> None:
        """A response was sent: the next pipelined request starts, else the connection is
        idle from now (the keep-alive timer set unless it is already). Reading resumes
        once no request waits: uvicorn resumed it after every answer, and each answer let
        another read's worth of pipelined requests be parsed and queued (40,000 queued
        from a client that sent them at once; 220 MB more resident on the server)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self._bad is not None and not self.pipeline:  # the requests before it answered
            self.refuse(*self._bad)
            return
        timer = self._timer
        timer.answered()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            if isinstance(cycle, LeanCycle):
                self._start_lean(cycle)
            else:
                self._start_asgi_task(cycle, app)
            if not self.pipeline and not self._refused:  # answered early: read no more
                self.flow.resume_reading()
            return
        self.flow.resume_reading()
        timer.idle()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """The request's app task, unless the app answers it on its headers alone
        (``early``: a large body refused for a full queue): then the answer is written
        now, in the callback that parsed the headers, and no task is made (see the
        module docstring)."""
        early = self._early
        if early is not None:
            response = early(cycle.scope)
            if response is not None:
                status, headers, body = response
                head = STATUS_LINE[status] + b"".join(b"%s: %s\r\n" % h for h in headers)
                cycle.response_complete = True  # the parser drops the body's bytes
                self.server_state.total_requests += 1
                self._close_after(head + b"connection: close\r\n\r\n" + body, None)
                return
        super()._start_asgi_task(cycle, app)

    def on_headers_complete(self) -> None:
        self._timer.head_ended()
        before = self.cycle
        if not self._refused and self.take_lean(before):
            return
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before and not self._refused:  # a request's cycle (not an upgrade)
            writer = HeldHead(self.transport, cycle, cycle.on_response)
            cycle.transport = writer  # type: ignore[assignment]
            cycle.on_response = writer.on_response
            self._collector = Collector(cycle, self.flow, self.read_into, self.note_read)
            self.scope["extensions"] = {
                WHOLE_BODY: {"collector": self._collector},
                HEADERS_READ: {"at": perf_counter()},
            }

    def read_into(self, view: memoryview, start: int, keep: bytes) -> None:
        """The rest of the current request's body read into ``view[start:]`` by a
        ``BodyInto`` standing in for this protocol until the body's last byte."""
        self.transport.set_protocol(BodyInto(self, view, start, keep))

    def body_read(self) -> None:
        """``BodyInto`` read the body's last byte: the message ends as the parser would
        end it. The parser, which saw none of those bytes, is replaced by a fresh one for
        the next request on the connection."""
        self.parser = httptools.HttpRequestParser(self)
        self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        """A piece of the body: to a lean request's pieces; to the app's collector while
        it reads the whole body, else into uvicorn's buffer, its reading paused past 64
        KiB."""
        cycle: Any = self.cycle
        if type(cycle) is LeanCycle:
            if not cycle.response_complete:  # else answered before its body: dropped
                cycle.pieces.append(body)
            return
        collector = self._collector
        if collector is not None and collector.pieces is not None:
            if not self.cycle.response_complete:
                collector.take(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: Any = self.cycle
        if type(cycle) is LeanCycle:  # the body whole: its handler reads it
            cycle.more_body = False
            cycle.message_event.set()
            return
        super().on_message_complete()
