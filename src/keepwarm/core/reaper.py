"""Closes unloaded models on a thread of its own, gives memory back, and measures it.

A model's ``close()`` that raises, ``sys.exit()`` and other ``BaseException``s included, is
logged (an error record naming the model and version, with the traceback) and the closing
goes on: the thread never ends on a model's failure. A ``KeyboardInterrupt`` raised while
closing on the caller's own thread (after ``stop``) is logged too, then raised again there.

A full garbage collection stops every thread (about 150 ms once TensorFlow is imported),
so closes are batched: at most one collection (and ``malloc_trim``) per ``min_interval``
seconds, however many models were unloaded in between.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from keepwarm.core.entry import Entry
from keepwarm.core.events import Event, EventBus
from keepwarm.core.ids import ModelId
from keepwarm.core.memory import release_memory, rss_bytes

log = logging.getLogger("keepwarm.manager")

_Job = tuple[Any, Entry, str, Callable[[Entry], None] | None]


class Reaper:
    def __init__(self, events: EventBus, min_interval: float = 1.0) -> None:
        self._events = events
        self._min_interval = min_interval
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_release = -min_interval
        self._pending = 0  # closes asked for and not finished (guarded by _lock)
        self._stopped = False
        self.idle = threading.Event()
        self.idle.set()

    def close(
        self, model: Any, entry: Entry, reason: str, then: Callable[[Entry], None] | None
    ) -> None:
        """Close ``model`` soon, off the caller's thread; then call ``then(entry)``.
        Once stopped, close it at once on the caller's thread."""
        with self._lock:
            if self._stopped:
                inline = True
            else:
                inline = False
                self._pending += 1
                self.idle.clear()
        if inline:
            self._close((model, entry, reason, then), inline=True)
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="keepwarm-reaper", daemon=True
                )
                self._thread.start()
        self._queue.put((model, entry, reason, then))

    def stop(self, timeout: float = 30.0) -> None:
        """Close what is queued, give the memory back, then end the thread (waiting up to
        ``timeout``); later closes happen on the caller's thread."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        self._queue.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is None:
                return
            before = rss_bytes()
            batch: list[tuple[Entry, str, int]] = []
            # Close this job and every one that arrives before the next collection is due.
            while job is not None:
                batch.append(self._close(job))
                job = None
                wait = self._last_release + self._min_interval - time.monotonic()
                try:
                    job = (
                        self._queue.get(timeout=max(wait, 0.0))
                        if wait > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
            release_memory()
            self._last_release = time.monotonic()
            freed = max(0, before - rss_bytes())
            held = sum(nbytes for _, _, nbytes in batch) or 1
            for entry, reason, nbytes in batch:
                share = freed * nbytes // held
                entry.unreclaimed_bytes = max(0, nbytes - share)
                self._events.emit(Event("reclaimed", entry.key, reason=reason, nbytes=share))
            with self._lock:
                self._pending -= len(batch)
                if self._pending == 0:
                    self.idle.set()

    def _close(self, job: _Job, inline: bool = False) -> tuple[Entry, str, int]:
        model, entry, reason, then = job
        held = int(getattr(model, "nbytes", 0) or 0)
        interrupt: KeyboardInterrupt | None = None
        try:
            if model is not None:
                model.close()
        except BaseException as exc:  # sys.exit() in a model's close(): logged, never the end
            log.error(  # of this thread
                "closing %s (%s) failed: %s: %s",
                _named(entry.key),
                reason,
                getattr(exc, "type_name", None) or type(exc).__name__,  # a worker's, by name
                exc,
                exc_info=exc,
            )
            if inline and isinstance(exc, KeyboardInterrupt):
                interrupt = exc
        del model, job
        if then is not None:
            then(entry)
        if interrupt is not None:
            raise interrupt
        return entry, reason, held


def _named(key: object) -> str:
    """``model 'm' version 1`` for a repository's key; a cache's key as it prints."""
    if isinstance(key, ModelId):
        return f"model {key.name!r} version {key.version}"
    return str(key)
