"""A worker process's output, seen from the server: the thread that reads its pipe.

The worker's stdout and stderr are one pipe. A thread reads it to its end: each whole line
goes to the server's stderr with the worker's prefix (native libraries' start-up chatter
dropped, as the server drops its own), the last few kilobytes are kept (the error of a
worker that dies quotes them), and when the pipe ends (the worker exited) ``on_end`` is
called on that thread: that is how a death is noticed, even between calls.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
from collections.abc import Callable

from keepwarm.logs import is_native_chatter

TAIL_BYTES = 4096  # bytes of a worker's output kept for the error when it dies
_CHUNK = 65536


class WorkerOutput:
    """Reads ``fd`` (the read end of the worker's output pipe, closed here) on a thread
    named ``name``, prefixing each forwarded line with ``prefix``."""

    def __init__(self, fd: int, prefix: str, name: str, on_end: Callable[[], None]) -> None:
        self._prefix = prefix.encode()
        self._on_end = on_end
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_bytes = 0
        self._lock = threading.Lock()
        self.drained = threading.Event()  # the pipe reached its end
        self._thread = threading.Thread(target=self._read, args=(fd,), name=name, daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for the reader (not from the reader itself, i.e. inside ``on_end``)."""
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def tail(self) -> str:
        with self._lock:
            return b"".join(self._tail).decode("utf-8", "replace")

    def tail_text(self) -> str:
        """ "; its last output: ..." for an error message, or "" when it said nothing."""
        text = self.tail().strip()
        return f"; its last output: {text[-1000:]}" if text else ""

    def _read(self, fd: int) -> None:
        pending = b""
        try:
            while chunk := os.read(fd, _CHUNK):
                *lines, pending = (pending + chunk).split(b"\n")
                self._forward(lines)
            if pending:
                self._forward([pending])
        except OSError:
            pass
        finally:
            os.close(fd)
            self.drained.set()
        self._on_end()

    def _forward(self, lines: list[bytes]) -> None:
        kept = b"".join(line + b"\n" for line in lines if not is_native_chatter(line))
        if not kept:
            return
        with self._lock:
            self._tail.append(kept)
            self._tail_bytes += len(kept)
            while self._tail_bytes - len(self._tail[0]) >= TAIL_BYTES:
                self._tail_bytes -= len(self._tail.popleft())
        text = b"".join(self._prefix + line + b"\n" for line in kept.splitlines())
        with contextlib.suppress(OSError, ValueError):  # no stderr (closed at exit)
            sys.stderr.write(text.decode("utf-8", "replace"))
