"""The ``keepwarm`` command's progress output: downloads and loads, redrawn in place on a
TTY, a few lines otherwise."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

_BAR = 24


class Progress:
    """Download and load progress on ``stream``: redrawn in place on a TTY, else a few lines."""

    def __init__(self, stream: TextIO, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and stream.isatty()
        self._started = 0.0
        self._last = 0.0
        self._done = -1  # -1: no download seen

    def _write(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text)
            self.stream.flush()

    def download(self, done: int, total: int | None) -> None:
        """The ``progress(bytes_done, total_or_None)`` callback of ``resolve_uri``."""
        now = time.monotonic()
        if self._done < 0:
            self._started = now
            size = "size unknown" if total is None else size_text(total)
            self._write(f"downloading ({size}) ..." + ("" if self.tty else "\n"))
        self._done = done
        if now - self._last < (0.1 if self.tty else 2.0) and done != total:
            return
        self._last = now
        if self.tty and total:
            filled = min(_BAR, _BAR * done // total)
            bar = "[" + "#" * filled + "." * (_BAR - filled) + "]"
            self._write(f"\rdownloading {bar} {size_text(done)} / {size_text(total)}  ")
        elif self.tty:
            self._write(f"\rdownloading {size_text(done)}  ")
        elif done and done != total:
            of = f" / {size_text(total)}" if total else ""
            self._write(f"downloading: {size_text(done)}{of}\n")

    def end_download(self, ok: bool) -> None:
        """After ``resolve_uri``: a summary line if bytes were fetched."""
        if self._done < 0:
            return
        seconds = time.monotonic() - self._started
        line = f"downloaded {size_text(self._done)} in {seconds:.1f} s" if ok else ""
        self._write(("\r" + " " * 70 + "\r" if self.tty else "") + line + ("\n" if line else ""))
        self._done = -1

    @contextmanager
    def loading(self, what: str) -> Iterator[None]:
        """Show elapsed seconds while the ``with`` block loads ``what``."""
        started = time.monotonic()
        stop = threading.Event()
        ticker = None
        if self.tty:

            def tick() -> None:
                while not stop.wait(0.5):
                    self._write(f"\rloading {what} ... {time.monotonic() - started:.1f} s")

            ticker = threading.Thread(target=tick, name="keepwarm-cli-ticker", daemon=True)
            self._write(f"loading {what} ...")
            ticker.start()
        else:
            self._write(f"loading {what} ...\n")
        try:
            yield
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
                self._write("\r" + " " * 70 + "\r")
        self._write(f"loaded {what} in {time.monotonic() - started:.1f} s\n")


def size_text(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"
