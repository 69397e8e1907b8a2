"""A lean request's answer written to its socket by the thread that encodes it.

On the lean path (``http/lean.py``) the worker thread that runs a request (the hop of
``Requests.infer``) encodes its answer; the event loop then had to wake (the hop's
eventfd), take the interpreter lock, settle the job, resume the request's task and write
the answer before the client got it. Here the encode the handler hands the service also
builds the answer's bytes and sends them from that thread (``AnswerHere``), and the loop
does the rest (the write of what the socket did not take, the cycle's end, metrics,
keep-alive) once it wakes, off the client's path.

Safe because:

- only a lean cycle's answer is sent so, once no earlier request is unanswered on its
  connection, and while the loop writes nothing else to it (it writes the rest of that
  answer, if any, only when the request's task resumes);
- only over a plain TCP transport (uvloop's or asyncio's: never TLS), and only when its
  write buffer is empty (every earlier byte is with the kernel, so the answer's bytes
  follow them);
- the send goes to the connection's own duplicate of its socket's descriptor
  (``SocketWriter``), closed by the loop (``connection_lost``) under the writer's lock:
  a send never reaches a descriptor closed and reused by another connection;
- the send is non-blocking: what the socket does not take (a partial send, ``EAGAIN``)
  the loop writes after it, in order; an error (the client gone) sends nothing, and the
  loop's own write then meets the error and handles it as it always has;
- ``keep_alive`` is cleared (a graceful shutdown) and refusals are written under the same
  lock as the check and the send: an answer built for a kept connection is either sent
  before the shutdown began (the loop closes the connection after it, as after any answer
  then) or not sent here at all (the loop writes it with ``connection: close``);
- an answer sent here is the request's answer: should the handler return another after
  it (something raised after the encode), the loop writes nothing and closes.

A batched request's answer, encoded by its batch thread, is sent from there the same way.
The next request, which now often arrives before the loop has ended the one before, is
queued behind it on the lean path (``http/protocol.py``).

Measured (MLP, ``bench/ab.py`` against the version before, batching on, v2 JSON, 6 rounds
of 3 s alternated, machine loaded: p50 about 1 ms at c=1 where 0.65 ms is usual), ratios
of the per-round medians: c=1 req/s 1.094x, server CPU per request 0.924x, the loop's
0.766x (p50 1.002 against 1.104 ms); c=4 1.027x, 0.837x, 0.810x; c=32 1.074x, 0.871x,
0.839x. ``bench/c1_floor.py`` (4 rounds of 2 s, same machine, direct's p50 0.39 ms JSON
and 0.34 ms binary, twice the usual), above direct, this against the version before: v2
JSON +0.501 against +0.555 ms (batching on), +0.526 against +0.625 (off); v2 binary
+0.383 against +0.360, +0.341 against +0.363. Again, 6 rounds on a quieter machine
(direct 0.25 ms): JSON +0.378 against +0.414 (on), +0.333 against +0.398 (off); binary
+0.431 against +0.401, +0.371 against +0.364; binary alone, 10 rounds (direct 0.24 ms):
+0.377 against +0.393 (req/s 1.08x), +0.352 against +0.365 (1.06x). So JSON gains
0.04-0.10 ms and binary 0.01-0.02 ms (within a run's scatter, which is about 0.03 ms):
issue 7's 0.3 ms is still not met. Not profiled since; the likely remainder is the loop's
own turn for the next request (its read, parse and task), which now often arrives while
the loop still ends the one before, and waits behind it.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from keepwarm.http.messages import Response

if TYPE_CHECKING:
    from keepwarm.http.lean import LeanCycle

#: The transports whose socket is written plainly (``get_extra_info("socket")``); an SSL
#: transport, whose socket carries TLS records, is never one of them.
PLAIN_TRANSPORTS = frozenset(("TCPTransport", "_SelectorSocketTransport"))


class SocketWriter:
    """One connection's duplicate of its socket's descriptor, for sends from other
    threads (see the module docstring); ``lock`` also guards what the loop changes that
    a send checks."""

    __slots__ = ("_fd", "lock")

    def __init__(self, fd: int) -> None:
        self._fd = os.dup(fd)
        self.lock = threading.Lock()

    @classmethod
    def of(cls, transport: Any) -> SocketWriter | None:
        """A writer for ``transport``'s socket, or None when it is not plain TCP."""
        if type(transport).__name__ not in PLAIN_TRANSPORTS:
            return None
        if transport.get_extra_info("sslcontext") is not None:
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        return cls(sock.fileno())

    def send(self, data: bytes, cycle: LeanCycle, transport: Any) -> int:
        """How many bytes of ``data`` went to the socket: 0 when the cycle or its
        connection is not as a send here needs (see the module docstring)."""
        with self.lock:
            if (
                self._fd < 0
                or not cycle.keep_alive
                or cycle.disconnected
                or cycle.response_started
                or transport.is_closing()
                or transport.get_write_buffer_size()
            ):
                return 0
            cycle.response_started = True  # nothing else answers it now
            try:
                return os.write(self._fd, data)
            except OSError:  # full (EAGAIN) or the client gone: the loop writes
                return 0

    def close(self) -> None:
        """On the loop, when the connection is lost."""
        with self.lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class AnswerHere:
    """A lean cycle's ``send(response)``, called by its handler's encode on the thread
    that encodes (at most once counts): the answer's bytes, built as the loop builds them
    (``answer_bytes``), sent through the connection's ``SocketWriter``."""

    __slots__ = ("_cycle", "_default_headers", "_transport", "_writer", "data", "response", "sent")

    def __init__(
        self,
        writer: SocketWriter,
        transport: Any,
        cycle: LeanCycle,
        default_headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._writer = writer
        self._transport = transport
        self._cycle = cycle
        self._default_headers = default_headers
        self.response: Response | None = None  # the answer sent, if any
        self.data = b""
        self.sent = 0  # bytes of ``data`` the socket took

    def __call__(self, response: Response) -> None:
        if self.response is not None:
            return
        data = answer_bytes(response, self._default_headers, True)
        sent = self._writer.send(data, self._cycle, self._transport)
        if sent:
            self.data, self.sent, self.response = data, sent, response


def answer_bytes(
    response: Response, default_headers: list[tuple[bytes, bytes]], keep_alive: bool
) -> bytes:
    """The response as uvicorn writes it: status line, the server's default header fields,
    content type and length, the response's own, ``connection: close`` when the
    connection is not kept, the body."""
    body = response.body
    head = [STATUS_LINE[response.status]]
    head += [b"%s: %s\r\n" % field for field in default_headers]
    head.append(b"content-type: %s\r\ncontent-length: %d\r\n" % (response.content_type, len(body)))
    head += [b"%s: %s\r\n" % field for field in response.headers]
    if not keep_alive:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    head.append(body)
    return b"".join(head)
