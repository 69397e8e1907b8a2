"""``Pending``: the future of a request queued for its batch."""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED
from typing import cast

from keepwarm.batching.merge import Arrays

_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))


class Pending(Future[Arrays]):
    """A queued request's future. ``done`` and ``cancelled`` read its state without its
    lock: one attribute read, atomic, and a snapshot either way (the lock is let go
    before the caller sees the answer). The queue asks them of every request it passes
    over, and the event loop of each request it awaits: two lock rounds each, saved.
    ``result`` of a finished future reads it the same way (its result is set before its
    state says so, both under the lock)."""

    def done(self) -> bool:
        return self._state in _DONE

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    def result(self, timeout: float | None = None) -> Arrays:
        if self._state == FINISHED and self._exception is None:
            return cast(Arrays, self._result)
        return super().result(timeout)
