"""ASGI plumbing: the request (body read under a size limit, decompressed under the same
limit), the response, and the one place errors become status codes."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from keepwarm.errors import (
    Code,
    InvalidInputError,
    KeepwarmError,
    PayloadTooLargeError,
    UnavailableError,
)
from keepwarm.protocol import jsonio

if TYPE_CHECKING:
    from keepwarm.service import InferenceService

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STATUS: dict[Code, int] = {
    Code.INVALID_ARGUMENT: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.PAYLOAD_TOO_LARGE: 413,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
    Code.INTERNAL: 500,
}
RETRY_AFTER = {Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE}
#: Bodies larger than this are parsed on a worker thread, not on the event loop.
INLINE_DECODE_BYTES = 64 * 1024
#: An answer sent before the request's body was read closes the connection when the body
#: is larger than this (or of unknown length): the loop would otherwise receive the rest
#: only to drop it, to keep the connection alive (uvicorn reads 64 KiB ahead).
DROP_BODY_BYTES = 64 * 1024
#: How long such a connection stays open, unread, after its whole answer was sent, before
#: it is closed: closing at once, with the client's body arriving, resets the connection,
#: and a client still writing its body may then lose the answer it had not yet read.
LINGER_SECONDS = 0.5

#: The extension in a request's ``scope["extensions"]`` whose ``"collector"`` reads its
#: body whole, when the server's protocol offers it (``http/whole_body.py``).
WHOLE_BODY = "keepwarm.whole_body"
#: The extension in a request's ``scope["extensions"]`` whose ``"at"`` is when the server
#: had parsed the request's headers (``time.perf_counter``), when its protocol notes it
#: (``http/protocol.py``): a refusal's time in the server is timed from there.
HEADERS_READ = "keepwarm.headers_read"
#: The extension whose ``"send"`` writes a request's answer from the thread that encodes
#: it, when its connection can (the lean path: ``http/answer_here.py``).
ANSWER_HERE = "keepwarm.answer_here"
CLIENT_GONE = "the client went away before sending its body"

T = TypeVar("T")
JSON = b"application/json"


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def with_status(self, status: int) -> Response:
        self.status = status
        return self


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, jsonio.dumps(value))


def error_response(exc: KeepwarmError, retry_after: int) -> Response:
    """The one mapping of error codes to HTTP: ``{"error": message}`` for both APIs."""
    response = json_response({"error": exc.message}, STATUS.get(exc.code, 500))
    if exc.code in RETRY_AFTER:
        response.headers.append((b"retry-after", str(retry_after).encode()))
    return response


class Request:
    """One HTTP request: routing parameters, headers, and the body on demand."""

    __slots__ = ("_receive", "headers", "max_body", "method", "params", "query", "read", "scope")

    def __init__(
        self, scope: Scope, receive: Receive, params: dict[str, str], max_body: int
    ) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.params = params
        self.query: bytes = scope.get("query_string", b"")
        self.max_body = max_body
        self._receive = receive
        self.read = False  # the whole body was received
        # ASGI servers give header names lowercased; a repeated header's last value wins.
        self.headers: dict[bytes, bytes] = dict(scope["headers"])

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    def leaves_body(self) -> bool:
        """Whether an answer now would leave a body of more than ``DROP_BODY_BYTES`` (or
        of unknown length) unread: then the answer closes the connection."""
        return not self.read and body_left(self.headers)

    def answer_here(self) -> Callable[[Response], None] | None:
        """The connection's ``send(response)`` for the handler's encode: the answer
        written from the thread that encodes it (``ANSWER_HERE``), or None."""
        found = self.scope.get("extensions", {}).get(ANSWER_HERE)
        return None if found is None else found["send"]

    async def disconnected(self) -> None:
        """Returns when the client goes away (after the body was read)."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return

    async def body(self) -> bytes:
        """The body, decompressed (gzip, deflate); over ``max_body`` before or after
        decompression is ``PayloadTooLargeError``."""
        limit = self.max_body
        declared = self.headers.get(b"content-length")
        length = int(declared) if declared is not None and declared.isdigit() else None
        if length is not None and length > limit:
            raise too_large(limit, f"{length} bytes")
        whole = self.scope.get("extensions", {}).get(WHOLE_BODY)
        data: bytes
        if whole is not None:
            data = await whole["collector"].read(limit, length)
        else:
            data = await self._received(limit)
        self.read = True
        if b"content-encoding" not in self.headers:
            return data
        encoding = (self.header(b"content-encoding") or "identity").strip().lower()
        if encoding in ("", "identity"):
            return data
        if encoding in ("gzip", "x-gzip"):
            return _inflate(data, limit, gzip=True)
        if encoding == "deflate":
            return _inflate(data, limit, gzip=False)
        raise InvalidInputError(
            f"Content-Encoding {encoding!r} is not supported (gzip, deflate or identity)"
        )

    async def _received(self, limit: int) -> bytes:
        """The body as ``receive()`` gives it, piece by piece (any ASGI server)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise InvalidInputError(CLIENT_GONE)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit, f"more than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def body_left(headers: dict[bytes, bytes]) -> bool:
    """Whether a request of these header fields (names lowercased) has a body of more
    than ``DROP_BODY_BYTES`` or of unknown length: left unread, its connection closes."""
    declared = headers.get(b"content-length")
    if declared is None:
        return b"transfer-encoding" in headers
    return not declared.isdigit() or int(declared) > DROP_BODY_BYTES


async def answer_and_close(send: Send, start: Message, body: bytes) -> None:
    """Send a whole answer (``start`` says ``Connection: close``) to a request whose body
    is left unread, and close its connection ``LINGER_SECONDS`` later: the answer is
    complete at once (its Content-Length sent), the body is not read meanwhile (uvicorn
    stops reading past 64 KiB), and the client reads the answer before the close."""
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await asyncio.sleep(LINGER_SECONDS)
    await send({"type": "http.response.body", "body": b""})


def _inflate(data: bytes, limit: int, *, gzip: bool) -> bytes:
    """``data`` decompressed, at most ``limit`` bytes of it. A gzip body of several members
    (RFC 1952) is their contents joined; other bytes after the compressed data are refused."""
    wbits = 16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS
    pieces: list[bytes] = []
    size = 0
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise InvalidInputError(f"the body is not valid compressed data: {exc}") from None
        size += len(out)
        if size > limit or inflater.unconsumed_tail:
            raise too_large(limit, "more after decompression")
        if not inflater.eof:
            raise InvalidInputError("the compressed body is truncated")
        pieces.append(out)
        data = inflater.unused_data
        if not data:
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if not (gzip and data.startswith(b"\x1f\x8b")):  # not another gzip member
            raise InvalidInputError(f"the body has {len(data)} bytes after the compressed data")


def too_large(limit: int, got: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is over the limit of {limit} bytes ({got}); "
        "raise it with the server's max_body_bytes setting"
    )


async def parse_off_loop(body: bytes, parse: Callable[[bytes], T]) -> T:
    """``parse(body)``: here when the body is small (``INLINE_DECODE_BYTES``), else on a
    worker thread, so that the event loop keeps running while a large body is parsed (the
    parsers give the GIL up between pieces of a large array)."""
    if len(body) <= INLINE_DECODE_BYTES:
        return parse(body)
    return await asyncio.get_running_loop().run_in_executor(None, parse, body)


def header_timeout(request: Request) -> float | None:
    """``Keepwarm-Timeout-Ms`` in seconds (None when absent)."""
    value = request.header(b"keepwarm-timeout-ms")
    if value is None:
        return None
    try:
        millis = float(value)
    except ValueError:
        millis = -1.0
    if not millis > 0 or millis == float("inf"):
        raise InvalidInputError(
            f"Keepwarm-Timeout-Ms {value!r}: expected a positive number of milliseconds"
        )
    return millis / 1000.0


def refuse_when_overloaded(service: InferenceService, request: Request) -> None:
    """``service.refuse_when_overloaded`` for the request's model, before its body is
    read; a refusal's seconds since the server parsed its headers go to
    ``keepwarm_refusal_seconds`` (the server's own share of a 503's time: the event
    loop's lateness in reaching the request's bytes is not in it)."""
    name = request.params["model"]
    try:
        service.refuse_when_overloaded(name)
    except UnavailableError:
        read = request.scope.get("extensions", {}).get(HEADERS_READ)
        if read is not None:
            service.metrics.refused(name, time.perf_counter() - read["at"])
        raise
