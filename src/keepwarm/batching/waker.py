"""A timer thread for held partial batches: ``arm(at)`` calls ``fire()`` at ``at``.

Started on first use: a batcher that never holds a batch (an idle or lightly loaded
model) never starts one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Waker:
    def __init__(
        self, fire: Callable[[], None], *, name: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._fire = fire
        self._name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._at: float | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, at: float) -> None:
        """Call ``fire()`` at ``at`` (``clock`` time) at the latest."""
        with self._cond:
            if self._closed:
                return
            self._at = at if self._at is None else min(self._at, at)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"keepwarm-batch-waker-{self._name}", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._at is None or self._clock() < self._at):
                    self._cond.wait(None if self._at is None else self._at - self._clock())
                if self._closed:
                    return
                self._at = None
            self._fire()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
