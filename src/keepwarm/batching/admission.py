"""Admission to a batcher's queue: whether a request would be refused now, places reserved
in the queue by requests admitted but not yet queued, and the error of a refused request.
``Dispatch`` (``keepwarm.batching.dispatch``) is its only subclass and sets the state read
here; a refusal reads it without the lock (the reasons are in ``full``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from keepwarm.batching.batch_queue import BatchQueue
from keepwarm.batching.stats import BatchStats
from keepwarm.errors import UnavailableError


class Admission:
    """The full-queue rule of a ``Dispatch`` (its base): ``queue`` and ``max_queue`` bound
    the requests queued, with ``_reserved`` counting places taken by admitted requests not
    yet queued; ``_lock`` is the dispatch's lock (taken here only to purge cancelled
    requests)."""

    name: str
    queue: BatchQueue
    max_queue: int
    stats: BatchStats
    _lock: threading.Lock
    _clock: Callable[[], float]
    _reserved: list[None]

    def full(self) -> bool:
        """Whether a request would be refused now (cancelled requests not counted). Read
        without the lock unless a queued request was cancelled (it is then purged): a
        refusal never waits for a batch thread that holds the lock, nor for the
        interpreter lock that thread needs to let go of it (up to a switch interval)."""
        items = self.queue.items
        if len(items) + len(self._reserved) < self.max_queue:
            return False  # the common case
        try:
            if not any(item.future.cancelled() for item in tuple(items)):  # a copy, in C
                return True  # the refusal's case: full, nothing to purge
        except RuntimeError:  # changed while copied (the GIL let go mid-copy: rare)
            pass
        with self._lock:
            self.queue.purge(self._clock())
            return self._full()

    def _full(self) -> bool:
        """Under the lock: the queue, with its places reserved, refuses requests."""
        return len(self.queue.items) + len(self._reserved) >= self.max_queue

    def reserve(self) -> bool:
        """Reserve a place in the queue for a request admitted now (False: full); the
        caller gives it back with ``unreserve`` once the request is queued or has failed.
        No lock: ``list.append`` and ``list.pop`` are atomic (two callers at once may
        pass a queue one place short of full: ``enqueue`` keeps the bound itself)."""
        if self.full():
            return False
        self._reserved.append(None)
        return True

    def unreserve(self) -> None:
        self._reserved.pop()

    def refuse(self) -> UnavailableError:
        """The error of a request refused for a full queue (counted as rejected, without
        the lock, as ``expire`` counts: a refusal waits for no other thread; two counts
        at the same instant, here and in ``enqueue``, may lose one)."""
        self.stats.rejected += 1
        return self._overloaded(len(self.queue.items) + len(self._reserved))

    def _overloaded(self, queued: int) -> UnavailableError:
        return UnavailableError(
            f"model {self.name!r} is overloaded: {queued} requests are queued (max_queue); "
            "retry later"
        )
