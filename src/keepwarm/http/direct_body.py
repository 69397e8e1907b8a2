"""The rest of a large body read from the socket straight into the ``bytes`` it becomes.

Read the ordinary way, each byte of a body is copied three times on the event loop after
the kernel's copy: uvloop makes a ``bytes`` of every read (up to 256 KiB), the HTTP parser
a ``bytes`` of the body's part of it, and the collector joins those pieces at the end. A
1.6 MB MobileNetV2 JSON body is ~5 MB of copying per request, a part of the loop's time
at 32 clients.

For a body whose length the client declared, ``Collector.read`` (``http/whole_body.py``)
instead makes the ``bytes`` object first, at its final size and not yet seen by anyone,
and the connection's transport is handed a ``BodyInto`` (a buffered protocol) that gives
the kernel the unwritten part of that object to read into: the body is written once. When
the last byte has arrived the transport goes back to the HTTP protocol, which ends the
request's message as its parser would have (``OneWriteProtocol.body_read``); bytes past
the body (a pipelined request) are never read by ``BodyInto``: its buffer ends where the
body does. Everything the transport tells a protocol meanwhile (the connection lost, end
of input, writing paused or resumed) goes on to the HTTP protocol.

A ``bytes`` object is written in place here as C code writes one it has just made
(``PyBytes_FromStringAndSize(NULL, n)``, then filled): the object is handed to nobody
until it is whole, so nothing can see it change. ``writable_bytes`` is ``None`` where the
interpreter lacks that C API (not CPython): bodies are then read the ordinary way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

#: A body is read in place when at least this much of it is still to come.
DIRECT_BYTES = 64 * 1024


class HttpSide(Protocol):
    """What ``BodyInto`` needs of the HTTP protocol it stands in for."""

    transport: asyncio.Transport

    def body_read(self) -> None: ...
    def note_read(self) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def eof_received(self) -> bool | None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


def _c_api() -> Callable[[int], tuple[bytes, memoryview]] | None:
    """A maker of fresh, unfilled ``bytes`` objects of a given size with a writable view
    of their contents, checked once here; ``None`` where the C API is not there."""
    try:
        import ctypes

        api = ctypes.pythonapi
        new = api.PyBytes_FromStringAndSize
        new.restype, new.argtypes = ctypes.py_object, (ctypes.c_void_p, ctypes.c_ssize_t)
        where = api.PyBytes_AsString
        where.restype, where.argtypes = ctypes.c_void_p, (ctypes.py_object,)
        view = api.PyMemoryView_FromMemory
        view.restype = ctypes.py_object
        view.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)
    except (ImportError, AttributeError):  # pragma: no cover - not CPython
        return None
    writable = 0x200  # PyBUF_WRITE

    def make(size: int) -> tuple[bytes, memoryview]:
        data: bytes = new(None, size)
        return data, view(where(data), size, writable)

    data, inside = make(16)
    inside[:] = b"0123456789abcdef"
    return make if data == b"0123456789abcdef" else None


#: ``writable_bytes(n)``: a fresh ``bytes`` of ``n`` (unfilled) bytes and a writable view
#: of them; the view must not outlive the object (``BodyInto`` holds both).
writable_bytes = _c_api()


class BodyInto(asyncio.BufferedProtocol):
    """The connection's protocol while the rest of one body is read into ``view`` (from
    ``start`` to its end); then the transport goes back to ``http``."""

    __slots__ = ("_got", "_http", "_keep", "_view")

    def __init__(self, http: HttpSide, view: memoryview, start: int, keep: bytes) -> None:
        self._http = http
        self._view: memoryview | None = view
        self._keep = keep  # the object ``view`` writes into: alive while the view is
        self._got = start

    def get_buffer(self, sizehint: int) -> memoryview:
        assert self._view is not None
        return self._view[self._got :]

    def buffer_updated(self, nbytes: int) -> None:
        view = self._view
        assert view is not None
        self._got += nbytes
        self._http.note_read()
        if self._got == len(view):
            self._view = None
            http = self._http
            http.transport.set_protocol(http)  # type: ignore[arg-type]
            http.body_read()

    def connection_lost(self, exc: Exception | None) -> None:
        self._view = None
        self._http.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self._http.eof_received()

    def pause_writing(self) -> None:
        self._http.pause_writing()

    def resume_writing(self) -> None:
        self._http.resume_writing()

    def __repr__(self) -> str:
        return f"<BodyInto {self._got} of {len(self._view) if self._view else '-'}: {self._http!r}>"
