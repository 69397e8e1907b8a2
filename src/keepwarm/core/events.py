"""Manager events, delivered to subscribers on one dispatcher thread (never under a lock)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from keepwarm.core.states import State
from keepwarm.errors import InvalidInputError

log = logging.getLogger("keepwarm.events")


@dataclass(frozen=True)
class Event:
    """``kind`` is ``state`` (a transition), ``evicted``, ``reclaimed`` or ``hit``/``miss``."""

    kind: str
    key: Hashable
    state: State | None = None
    reason: str | None = None
    nbytes: int | None = None
    time: float = field(default_factory=time.monotonic)


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every later event; returns the unsubscribe function."""
        if not callable(callback):  # taken, it logged a TypeError at every event
            raise InvalidInputError(f"subscriber {callback!r}: expected a callable")
        with self._lock:
            self._subscribers.append(callback)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._dispatch, name="keepwarm-events", daemon=True
                )
                self._thread.start()

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: Event) -> None:
        if self._subscribers:
            self._queue.put(event)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver the events already emitted, then stop the dispatcher thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _dispatch(self) -> None:
        while (event := self._queue.get()) is not None:
            with self._lock:
                subscribers = list(self._subscribers)
            for callback in subscribers:
                try:
                    callback(event)
                except Exception:  # a subscriber's bug must not stop the others
                    log.exception("event subscriber %r failed", callback)
