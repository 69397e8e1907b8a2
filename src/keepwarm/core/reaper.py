"""Closes unloaded models on a thread of its own, gives memory back, and measures it."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from keepwarm.core.entry import Entry
from keepwarm.core.events import Event, EventBus
from keepwarm.core.memory import release_memory, rss_bytes

log = logging.getLogger("keepwarm.manager")

_Job = tuple[Any, Entry, str, Callable[[Entry], None] | None]


class Reaper:
    def __init__(self, events: EventBus) -> None:
        self._events = events
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    def close(self, model: Any, entry: Entry, reason: str,
              then: Callable[[Entry], None] | None) -> None:
        """Close ``model`` soon, off the caller's thread; then call ``then(entry)``."""
        self.idle.clear()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="keepwarm-reaper",
                                                daemon=True)
                self._thread.start()
        self._queue.put((model, entry, reason, then))

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            model, entry, reason, then = job
            held = getattr(model, "nbytes", 0) or 0
            before = rss_bytes()
            try:
                if model is not None:
                    model.close()
            except Exception:
                log.exception("closing %s failed", entry.key)
            del model, job
            release_memory()
            freed = max(0, before - rss_bytes())
            entry.unreclaimed_bytes = max(0, int(held) - freed)
            self._events.emit(Event("reclaimed", entry.key, reason=reason, nbytes=freed))
            if then is not None:
                then(entry)
            if self._queue.empty():
                self.idle.set()
