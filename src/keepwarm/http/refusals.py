"""How ``OneWriteProtocol`` (``http/protocol.py``) refuses a request it will not hand to
the app: ``refuse`` answers ``{"error": ...}`` (408, 431, or the app's early 503), reads
no more and closes the connection ``LINGER_SECONDS`` later, unread; bytes the parser
refuses are answered 400 (414 for an over-long URL, 431 for a header block over
``max_header_bytes``) after the answers to the requests before them.

A header block's size is checked twice: as it is parsed (the request line and each header
field counted in the parser's callbacks, so a block that came whole in one read is
measured), and by the connection's timer (``http/timers.py``), which counts the bytes read
after the read the block began in, for a block that grows without end and never
completes a field."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from keepwarm.http.lean_conn import LeanConnection
from keepwarm.http.messages import LINGER_SECONDS
from keepwarm.protocol import jsonio

if TYPE_CHECKING:
    from keepwarm.http.timers import ConnectionTimer, Limits


class _HeadTooLarge(Exception):
    """Raised in a parser callback: the request line and header fields so far are over
    ``max_header_bytes`` (``send_400_response`` answers 431)."""


class Refusing(LeanConnection):
    """The refusals of ``OneWriteProtocol``, which sets the attributes below."""

    limits: Limits
    _timer: ConnectionTimer
    _refused: bool
    _bad: tuple[int, str] | None
    _head_size: int

    # A header block that came whole in one read is measured as it is parsed (the timer
    # counts only what comes after the read it began in: one growing without end).
    def on_url(self, url: bytes) -> None:  # checked with the header fields (the parser
        self._head_size += len(url)  # itself refuses a URL over 65535 bytes: 414)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # ": " and the line's end
        if self._head_size > self.limits.max_header_bytes:
            raise _HeadTooLarge
        super().on_header(name, value)

    def _head_too_large(self) -> str:
        return (
            f"the request's line and header fields are over {self.limits.max_header_bytes} "
            "bytes (the server's limit)"
        )

    def refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with ``message``, read no more, and close the connection
        ``LINGER_SECONDS`` later: the client can read the answer before its unread bytes
        reset the connection. No answer when it would not be read as this request's: a
        response under way, or (a header block refused) an earlier request unanswered."""
        timer = self._timer
        cycle = self.cycle  # while a header block is read, the previous request's
        answer = None
        with self._locked():  # no answer sent off the loop meanwhile (``answer_here``)
            if (
                cycle is None
                or cycle.response_complete
                or (timer.head_since is None and not cycle.response_started)
            ):
                body = jsonio.dumps({"error": message})
                head = STATUS_LINE[status] + b"content-type: application/json\r\ncontent-length: "
                answer = head + b"%d\r\nconnection: close\r\n\r\n" % len(body) + body
            self._close_after(answer, cycle)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes the parser refuses (``msg``: "Invalid HTTP request
        received.", as text, the connection closed at once, ahead of the answers to the
        requests before them, which were lost): ``{"error": ...}`` with the parser's
        reason, 414 for a URL past the 65535 bytes it takes, 431 for a header block over
        ``max_header_bytes`` (``on_header``), after the answers to the requests before it
        (``on_response_complete``); a body's fault is answered now."""
        exc = sys.exc_info()[1]  # called in uvicorn's ``except HttpParserError``
        if isinstance(exc, httptools.HttpParserCallbackError):  # raised in a callback
            inner = exc.__cause__ or exc.__context__
            exc = inner if isinstance(inner, httptools.HttpParserError) else exc
        reason = str(exc)[:200] if exc is not None else msg
        too_large = isinstance(exc, httptools.HttpParserCallbackError) and isinstance(
            exc.__context__, _HeadTooLarge
        )
        if len(self.url) > 65535 and isinstance(exc, httptools.HttpParserError):
            status, message = 414, f"the URL is {len(self.url)} bytes; at most 65535 bytes"
        elif too_large:
            status, message = 431, self._head_too_large()
        else:
            status, message = 400, f"the request is not valid HTTP/1.1: {reason}"
        cycle = self.cycle
        if self.pipeline or (
            cycle is not None and not cycle.response_complete and not cycle.more_body
        ):
            self._bad = (status, message)
            self._refused = True  # nothing more is read
            self.transport.pause_reading()
            return
        self.refuse(status, message)

    def _close_after(self, answer: bytes | None, cycle: RequestResponseCycle | None) -> None:
        """Write ``answer`` (if any), read no more, and close ``LINGER_SECONDS`` later;
        ``cycle``'s app, if it is still answering, is told the client is gone."""
        self._refused = True
        self._timer.stop()
        if answer is not None:
            self.transport.write(answer)
        if cycle is not None and not cycle.response_complete:  # its app: the client is gone
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.pause_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
