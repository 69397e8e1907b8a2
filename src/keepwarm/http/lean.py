"""The inference routes' lean path: a request answered without uvicorn's request cycle.

Through uvicorn each request gets a ``RequestResponseCycle`` (an ``asyncio.Event``, a scope,
ASGI ``receive`` and ``send`` coroutines, two messages out and one or more in, a
``HeldHead`` and a ``Collector``) around the app's handler. For a request whose path the
app has resolved before to ``v2.infer`` or ``tfserving.predict`` (``HttpApp.lean``), a
POST over HTTP/1.1 with a declared body of at most ``LEAN_BODY_BYTES`` and no
Transfer-Encoding, Content-Encoding or Expect, none of it is made: ``OneWriteProtocol``
puts a ``LeanCycle`` where uvicorn's cycle would be and starts ``run`` at once, as
uvicorn starts its task (a request still sending its body is admitted, or refused for a
full queue, on its headers, as on the handler path): the same handler with a ``Request``
whose body the cycle collects (its ``WHOLE_BODY`` collector: usually whole before the task
first runs, the bytes having come in the same read), the same error mapping
(``HttpApp.respond``), and the answer (status line, header fields and body) written in one
write. Everything else still goes through uvicorn.

The ``LeanCycle`` has the fields of uvicorn's cycle that the protocol, its timer
(``http/timers.py``) and uvicorn's own connection handling read or set (``more_body``,
``disconnected``, ``response_complete``, ``keep_alive``, ``message_event.set()``), so
that keep-alive and body timers, graceful shutdown (``keep_alive`` cleared: the answer
then closes the connection), a pipelined request (queued behind it by uvicorn, reading
paused, started when it is answered) and a client gone while the request waits for its
batch (``receive`` returns ``http.disconnect``: the request leaves the queue) behave as on
the handler path.

Measured (MLP, c=1, ``bench/ab.py`` against the version before, rounds alternated in one
run, machine shared with other work): v2 JSON, batching on, 8 rounds: p50 0.770 against
0.812 ms, req/s 1.048x, server CPU per request 0.940x, the loop's 0.883x; again with c=32
(6 rounds): c=1 p50 0.657 against 0.722 ms, loop 0.883x; c=32 req/s 0.997x, CPU 0.967x,
loop 0.937x. TF Serving JSON (6 rounds): p50 0.726 against 0.843 ms, loop 0.840x.
Batching off (6 rounds): p50 0.619 against 0.710 ms (per-round ratios req/s 0.977x, loop
0.998x: noise there). ``bench/c1_floor.py`` (4 rounds of 2 s): above the direct call
+0.386 ms against +0.482 (batching on), +0.441 against +0.459 (off): issue 7's 0.3 ms not
yet met. Those runs started the task once the body was whole; started on the headers
(as now, so that a request still sending its body holds its place in the queue, which
``tests/e2e/test_server_refusals.py`` checks), 6 rounds on a busier machine: c=1 per-round
req/s 1.067x, CPU per request 0.918x, loop 0.862x (p50 0.964 ms both); c=32 1.063x,
0.915x, 0.900x; ``bench/c1_floor.py`` (4 rounds of 2 s, direct's p50 0.211 ms), above
direct against the version before: v2 JSON +0.501 against +0.598 ms (batching on), +0.438
against +0.478 (off); v2 binary +0.405 against +0.422, +0.397 against +0.454. ``py-spy``
of the loop thread on the lean path: the handler's own Python is now a small part; the
hop's wake-up (``Wakeup.post``, the GIL taken back from the worker) and the socket write
dominate what remains of the request in Python. Not tried: a flat callback path without
the task (the batching admission keeps its place in the task's context and releases it
from the task's done callback, so the task stays). Since then a successful answer is sent
by the thread that encodes it, the loop ending the request after (``http/answer_here.py``,
with its measurements).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from keepwarm.errors import InvalidInputError
from keepwarm.http.answer_here import AnswerHere, answer_bytes
from keepwarm.http.messages import (
    ANSWER_HERE,
    CLIENT_GONE,
    DROP_BODY_BYTES,
    HEADERS_READ,
    INLINE_DECODE_BYTES,
    WHOLE_BODY,
    Message,
    Request,
    Response,
)

#: A body of at most this many bytes may take the lean path (larger ones are parsed off
#: the loop, or read in place, through uvicorn's cycle); an answer before it is read would
#: keep the connection (``DROP_BODY_BYTES``) as on the handler path.
LEAN_BODY_BYTES = min(INLINE_DECODE_BYTES, DROP_BODY_BYTES)
#: Request header fields that send a request the usual way.
_NOT_LEAN = frozenset((b"transfer-encoding", b"content-encoding", b"expect"))
_DISCONNECT: Message = {"type": "http.disconnect"}

Handler = Callable[[Request], Awaitable[Response]]


class LeanApp(Protocol):
    """What the lean path needs of the app (``HttpApp``)."""

    max_body_bytes: int

    def lean(self, raw_path: bytes) -> tuple[Handler, dict[str, str]] | None: ...
    async def respond(self, handler: Handler, request: Request) -> Response: ...


class Wake:
    """The cycle's ``message_event``: set when the body is whole, the client goes
    (uvicorn's ``connection_lost``) or the request is refused, waking ``read`` or
    ``receive``."""

    __slots__ = ("waiter",)

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class LeanCycle:
    """One lean request: its route, header fields and body, and the fields of uvicorn's
    cycle that the connection reads (see the module docstring)."""

    __slots__ = (
        "at",
        "disconnected",
        "handler",
        "headers",
        "here",
        "keep_alive",
        "message_event",
        "more_body",
        "params",
        "pieces",
        "response_complete",
        "response_started",
        "waiting_for_100_continue",
    )

    def __init__(
        self,
        handler: Handler,
        params: dict[str, str],
        headers: list[tuple[bytes, bytes]],
        at: float,
    ) -> None:
        self.handler = handler
        self.params = params
        self.headers = headers
        self.at = at  # when its headers were parsed (``HEADERS_READ``)
        self.pieces: list[bytes] = []
        self.more_body = True
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.keep_alive = True
        self.waiting_for_100_continue = False
        self.message_event = Wake()
        self.here: AnswerHere | None = None  # its answer sent by the encoding thread

    async def read(self, limit: int, declared: int | None = None) -> bytes:
        """The whole body (the request's ``WHOLE_BODY`` collector; its declared length is
        within ``limit``, checked by ``Request.body``); ``InvalidInputError`` when the
        client went away first."""
        wake = self.message_event
        while self.more_body and not self.disconnected:
            wake.waiter = asyncio.get_running_loop().create_future()
            await wake.waiter
        wake.waiter = None
        if self.disconnected:
            raise InvalidInputError(CLIENT_GONE)
        pieces, self.pieces = self.pieces, []
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def receive(self) -> Message:
        """uvicorn's ``receive`` once the body was read: returns when the client goes."""
        wake = self.message_event
        while not self.disconnected:
            wake.waiter = asyncio.get_running_loop().create_future()
            await wake.waiter
        wake.waiter = None
        return _DISCONNECT


def lean_cycle(
    app: LeanApp, url: bytes, headers: list[tuple[bytes, bytes]], at: float
) -> LeanCycle | None:
    """The lean request of a POST to ``url`` with these header fields (names lowercased),
    or None: the request goes through uvicorn (see the module docstring)."""
    found = app.lean(url)
    if found is None:
        return None
    length = None
    for name, value in headers:
        if name == b"content-length":
            length = value
        elif name in _NOT_LEAN:
            return None
    if length is None or not length.isdigit() or int(length) > LEAN_BODY_BYTES:
        return None
    return LeanCycle(found[0], dict(found[1]), headers, at)


class Answering(Protocol):
    """What ``run`` needs of the connection (``OneWriteProtocol``)."""

    def lean_answered(self, cycle: LeanCycle, data: bytes) -> None: ...


async def run(
    conn: Answering,
    app: LeanApp,
    cycle: LeanCycle,
    default_headers: list[tuple[bytes, bytes]],
) -> None:
    """Answer ``cycle``'s request through its handler; the connection writes the
    answer."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "headers": cycle.headers,
        "extensions": {WHOLE_BODY: {"collector": cycle}, HEADERS_READ: {"at": cycle.at}},
    }
    here = cycle.here
    if here is not None:
        scope["extensions"][ANSWER_HERE] = {"send": here}
    request = Request(scope, cycle.receive, cycle.params, app.max_body_bytes)
    response = await app.respond(cycle.handler, request)
    if here is None or here.response is None:
        data = answer_bytes(response, default_headers, cycle.keep_alive)
    elif response is here.response:
        data = here.data[here.sent :]  # what the socket did not take
    else:  # another answer after the one sent (``http/answer_here.py``): none written
        cycle.keep_alive = False
        data = b""
    conn.lean_answered(cycle, data)
