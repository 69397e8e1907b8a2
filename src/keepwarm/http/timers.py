"""The one timer of an HTTP connection: keep-alive and the limits on slow or endless
requests, enforced for ``OneWriteProtocol`` (``http/protocol.py``).

uvicorn arms a keep-alive timer at the end of each response and cancels it when the next
request's bytes arrive (on uvloop a libuv timer made, started and closed per request).
Here a connection keeps one timer: the end of a response notes the time, the next bytes
clear it, and the timer, when it fires, closes a connection that has been idle for
``Limits.keep_alive`` seconds or sets itself again for the rest of that time.

A client cannot hold a connection and its buffers forever (uvicorn, with httptools, has
neither a limit on a request's header block nor a timeout before a response starts: a
connection that sent nothing, or a header line without end, or half a body, was kept open
for good, and 160 MB of header lines sent on one connection made the server 156 MB
larger). The same timer closes a connection that has sent no request for ``keep_alive``
seconds since it opened (as after a response); has 408 answered to a header block not
whole ``header`` seconds after its first byte (a client dripping one byte at a time is
never idle) and to a body from which no byte came for ``body`` seconds while the server
was reading (time during which the server itself stopped reading, a body not yet asked
for, is not counted); says when a header block still growing is over
``max_header_bytes`` (counted from the read after the one it began in; one that came
whole is measured as it is parsed, ``http/refusals.py``), which is answered 431; and drops
a connection
whose answers have not gone out for ``write`` seconds (the transport's buffer full: a
client that sends requests and reads none of the answers held its connection, and the
answer in its buffer, for good). The timer is checked lazily, as the keep-alive one: a
limit is enforced between its time and about twice that; a limit shorter than the one the
timer is set for brings it forward.

The limits are ``[server]`` settings (``keep_alive_timeout``, ``header_timeout``,
``body_timeout``, ``max_header_bytes``, ``write_timeout``; ``keepwarm.settings_sections``).
Moving the timer here from the protocol's own fields (a method call per event instead of
attribute writes) cost nothing measurable: ``bench/ab.py`` (MLP, v2 JSON, 5 rounds of
3 s, both sides interleaved) read req/s 1.07x and CPU per request 0.94x of the version
before at c=1, 1.01x and 0.97x at c=32 (event loop's time per request 0.97x, 0.98x):
noise. Bringing the timer forward (two or three ``TimerHandle.when()`` per request, no
re-arming with the default limits) and the write limit: req/s 0.94x, CPU 1.05x at c=1
and 1.05x, 0.94x at c=32 in a run of 6 rounds; 1.04x, 0.98x at c=1 in a run of 10: noise.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Limits:
    """A connection's limits: seconds idle before it is closed (``keep_alive``), from a
    header block's first byte to its end (``header``, 408 after), without a byte of a
    body being read (``body``, 408 after), and the bytes a header block may take
    (``max_header_bytes``, 431 past it), and that answers may wait, unsent because the
    client reads none of them, before the connection is dropped (``write``)."""

    keep_alive: float = 5.0
    header: float = 30.0
    body: float = 30.0
    max_header_bytes: int = 64 * 1024
    write: float = 30.0


class Connection(Protocol):
    """What the timer reads of its connection (uvicorn's protocol) and asks of it."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any  # uvicorn's RequestResponseCycle of the latest request, or None
    flow: Any  # uvicorn's FlowControl

    def refuse(self, status: int, message: str) -> None: ...

    def timeout_keep_alive_handler(self) -> None: ...


class ConnectionTimer:
    """One connection's timer and the times it checks (see the module docstring)."""

    __slots__ = (
        "_conn",
        "_handle",
        "_limits",
        "_loop",
        "_stopped",
        "head_bytes",
        "head_since",
        "idle_since",
        "read_at",
        "write_since",
    )

    def __init__(self, conn: Connection, limits: Limits) -> None:
        self._conn = conn
        self._limits = limits
        self._loop = conn.loop
        self._stopped = False
        self.idle_since: float | None = None  # the end of the last response, while idle
        self.read_at = 0.0  # the last bytes read, or the server's resumption of reading
        self.head_since: float | None = None  # a header block's first byte, until its end
        self.head_bytes = 0  # read since the read that header block began in
        self.write_since: float | None = None  # answers stopped going out (buffer full)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """The connection opened: idle from now."""
        self.idle_since = self.read_at = self._loop.time()
        self._arm(self._limits.keep_alive)

    def stop(self) -> None:
        """No more checks (the connection is closed or refused)."""
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def bytes_read(self, count: int) -> None:
        self.read_at = self._loop.time()
        if self.head_since is not None:
            self.head_bytes += count

    def head_too_large(self) -> bool:
        """A header block is being read and is over ``max_header_bytes``."""
        return self.head_since is not None and self.head_bytes > self._limits.max_header_bytes

    def note_read(self) -> None:
        """Bytes of the body arrived, or the server resumes reading it."""
        self.read_at = self._loop.time()

    def head_began(self) -> None:
        self.head_since = now = self._loop.time()
        self.head_bytes = 0
        self._arm_by(now + self._limits.header)

    def head_ended(self) -> None:
        """A body may follow: its limit is checked in time (from the read the header
        block ended in: the clock is not read again)."""
        self.head_since = None
        self._arm_by(self.read_at + self._limits.body)

    def writing_paused(self) -> None:
        """The transport's buffer is full: the client is not reading its answers."""
        self.write_since = now = self._loop.time()
        self._arm_by(now + self._limits.write)

    def writing_resumed(self) -> None:
        self.write_since = None

    def answered(self) -> None:
        """A response was sent: a body left unread, and a header block pipelined behind
        the answer, have their time counted from now."""
        self.read_at = now = self._loop.time()
        if self.head_since is not None:
            self.head_since = now

    def idle(self) -> None:
        """Nothing more to answer: the connection is idle from the last answer."""
        self.idle_since = self.read_at
        self._arm_by(self.read_at + self._limits.keep_alive)

    def _arm(self, seconds: float) -> None:
        if not self._stopped:
            self._handle = self._loop.call_later(seconds, self._check)

    def _arm_by(self, deadline: float) -> None:
        """The timer set to fire by ``deadline`` at the latest (sooner if it already is):
        a limit shorter than the one the timer was set for is checked in its time."""
        handle = self._handle
        if handle is not None:
            if handle.when() <= deadline:
                return
            handle.cancel()
        if not self._stopped:
            self._handle = self._loop.call_at(deadline, self._check)

    def _check(self) -> None:
        """The limit of what the connection is doing, enforced or set again."""
        self._handle = None
        conn = self._conn
        if self._stopped or conn.transport.is_closing():
            return
        limits = self._limits
        now = self._loop.time()
        cycle = conn.cycle
        if self.write_since is not None:
            left = self.write_since + limits.write - now
            if left <= 0:  # no answer can reach a client that reads none: dropped
                conn.transport.abort()
                return
        elif self.head_since is not None:
            if cycle is not None and not cycle.response_complete:  # pipelined behind it
                self.head_since = now  # its time counts from the answer before it
            left = self.head_since + limits.header - now
            if left <= 0:
                conn.refuse(408, f"the request's header block took over {limits.header:g} s")
                return
        elif cycle is not None and cycle.more_body and not cycle.disconnected:
            if conn.flow.read_paused:  # the server's delay, not the client's
                self.read_at = now
            left = self.read_at + limits.body - now
            if left <= 0:
                conn.refuse(408, f"no byte of the request's body came for {limits.body:g} s")
                return
        elif self.idle_since is not None:
            left = self.idle_since + limits.keep_alive - now
            if left <= 0:
                conn.timeout_keep_alive_handler()
                return
        else:  # busy: the end of its response sets the timer again
            return
        self._arm(left)

    def busy(self) -> None:
        """Bytes arrived: the connection is not idle."""
        self.idle_since = None
