"""A minimal gRPC client for load generation: unary calls over one HTTP/2 connection, the
frames written by hand on an asyncio stream, one call at a time, as ``protocol_load.py``'s
REST client writes HTTP/1.1 by hand. grpcio's own clients cost the client process 4-6x
the CPU per call of a raw socket (measured here: about 500 us against 95 us for a small
request), which on a shared 2-core machine slows the server under test and adds to every
latency: a benchmark of the server must not be a benchmark of the client library.

What it speaks (RFC 9113, gRPC over HTTP/2): the connection preface and SETTINGS (ours:
no push, a 2**31-1 receive window, so the server never waits for us), SETTINGS and PING
acknowledgements, flow control of what it sends (the server's SETTINGS and
WINDOW_UPDATEs), request headers as HPACK literals that are never indexed (so it keeps
no table), the length-prefixed message in DATA frames. Response headers are not decoded:
a unary call that succeeds carries a message; one that fails ends with trailers only (or a
reset), so ``call`` returns the response message or None.
"""

from __future__ import annotations

import asyncio
import struct

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 4, 5
MAX_WINDOW = 2**31 - 1
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"", length: int = -1) -> bytes:
    """A frame: its 9-byte header and ``payload`` (or only the header, for a payload of
    ``length`` bytes written after it)."""
    size = len(payload) if length < 0 else length
    return struct.pack(">I", size)[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 5.1) whose first byte carries ``first``'s high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name: int | bytes, value: bytes) -> bytes:
    """A header field "without indexing": by static-table name index, or a new name."""
    head = hpack_int(name, 4) if isinstance(name, int) else b"\x00" + hpack_int(len(name), 7) + name
    return head + hpack_int(len(value), 7) + value


def request_headers(authority: str, path: str) -> bytes:
    """``POST path`` as gRPC wants it (static table: 2 :method POST... see RFC 7541 A)."""
    return (
        b"\x83"  # :method: POST
        + b"\x86"  # :scheme: http
        + literal(4, path.encode())  # :path
        + literal(1, authority.encode())  # :authority
        + literal(31, b"application/grpc")  # content-type
        + literal(b"te", b"trailers")
    )


class WireChannel:
    """One connection (``await connect()``); ``await call(path, message)`` -> the response
    message's bytes, or None when the call failed."""

    def __init__(self, address: str) -> None:
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.authority = address
        self._headers: dict[str, bytes] = {}
        self._stream = -1
        self._send_window = 65535  # the connection's
        self._stream_window_initial = 65535
        self._stream_window = 0
        self._max_frame = 16384
        self._received = 0  # DATA bytes since our last WINDOW_UPDATE
        self._settings_seen = False

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        ours = struct.pack(">HI", 2, 0) + struct.pack(">HI", INITIAL_WINDOW_SIZE, MAX_WINDOW)
        self.writer.write(
            PREFACE
            + frame(SETTINGS, 0, 0, ours)
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - 65535))
        )
        while not self._settings_seen:
            await self._read_frame()

    def close(self) -> None:
        self.writer.close()

    async def call(self, path: str, message: bytes) -> bytes | None:
        self._stream += 2
        stream = self._stream
        self._stream_window = self._stream_window_initial
        block = self._headers.get(path)
        if block is None:
            block = self._headers[path] = request_headers(self.authority, path)
        prefix = b"\x00" + struct.pack(">I", len(message))  # not compressed, length
        self.writer.write(frame(HEADERS, END_HEADERS, stream, block))
        total = len(prefix) + len(message)
        sent = 0
        view = memoryview(message)
        while sent < total:
            room = min(self._send_window, self._stream_window, self._max_frame)
            if room <= 0:
                if await self._read_frame() is not None:
                    return None  # the server answered (refused) before the body was sent
                continue
            size = min(room, total - sent)
            self._send_window -= size
            self._stream_window -= size
            flags = END_STREAM if sent + size == total else 0
            self.writer.write(frame(DATA, flags, stream, b"", length=size))
            if sent == 0:  # the prefix goes first, whole (any window holds 5 bytes)
                self.writer.write(prefix)
                self.writer.write(view[: size - len(prefix)])
            else:
                self.writer.write(view[sent - len(prefix) : sent - len(prefix) + size])
            sent += size
        data = bytearray()
        while True:
            done = await self._read_frame(data)
            if done is not None:
                break
        if len(data) < 5:
            return None
        return bytes(data[5:])

    async def _read_frame(self, data: bytearray | None = None) -> bool | None:
        """Read and handle one frame; True when the current stream ended."""
        head = await self.reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = await self.reader.readexactly(length) if length else b""
        if kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload), 6):
                key, value = struct.unpack_from(">HI", payload, i)
                if key == INITIAL_WINDOW_SIZE:
                    self._stream_window += value - self._stream_window_initial
                    self._stream_window_initial = value
                elif key == MAX_FRAME_SIZE:
                    self._max_frame = value
            self._settings_seen = True
            self.writer.write(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self.writer.write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream == 0:
                self._send_window += increment
            elif stream == self._stream:
                self._stream_window += increment
        elif kind == GOAWAY:
            raise ConnectionError(f"the server sent GOAWAY: {payload[8:]!r}")
        elif stream == self._stream and stream > 0:
            if kind == DATA:
                self._received += length
                if flags & PADDED:
                    payload = payload[1 : len(payload) - payload[0]]
                if data is not None:
                    data += payload
                if self._received > MAX_WINDOW // 2:  # give the connection's window back
                    self.writer.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received)))
                    self._received = 0
            if kind == RST_STREAM or flags & END_STREAM:
                return True
        return None
