"""A queued request's wait on its event loop, at a cost per batch rather than per request.

``Wait.wait`` ends with ``DONE`` (the request's future is done: answered, failed or
cancelled), ``EXPIRED`` (its deadline passed) or ``GONE`` (``disconnected()`` returned: the
client went away). What a loop would otherwise pay per request is shared by all the
requests waiting on it (``_Side``, one per loop):

- the answers: a batch thread finishing a batch posts each request's wake-up to the loop's
  inbox, and the loop is called once for all that were posted meanwhile (one
  ``call_soon_threadsafe`` per batch, not per request). Waking the loop instead through
  an eventfd written with the interpreter lock let go, once the batch's answers were all
  given (as ``keepwarm.hop`` wakes it) was slower (MLP, 4 clients, ``bench/ab.py``: 0.875x
  req/s, CPU per request 1.06x): the batch thread, which wants the lock back at once to
  finish, then waits for the loop's switch interval while the loop writes the answers;
- the client watch: a request that is still waiting after ``WATCH_AFTER_SECONDS`` (at most
  twice that) has its client watched; one timer per loop ticks while requests wait,
  instead of a timer set and cancelled per request (most are answered long before).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

#: How long a queued request waits before its client is watched: most batches answer
#: sooner, and a watch costs a task per request.
WATCH_AFTER_SECONDS = 0.05

DONE, EXPIRED, GONE = "done", "expired", "gone"

_sides: dict[int, _Side] = {}  # by id(loop); a side leaves when nothing waits on it
_sides_lock = threading.Lock()


class Wait:
    """One queued request's wait (see the module docstring); made on its loop. Once over,
    it lets go of the request's future and of its client watch: the future's callback
    list refers to the wait, and a reference cycle (the wait, the future, and through
    ``disconnected`` the request and its ASGI cycle) would be freed only by the garbage
    collector, some twenty objects per request."""

    __slots__ = ("_disconnected", "_future", "_side", "_woken", "watch")

    def __init__(
        self,
        future: Future[Any],
        disconnected: Callable[[], Awaitable[None]] | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """``loop``: the running loop, when the caller has it already."""
        self._side = _side(asyncio.get_running_loop() if loop is None else loop)
        self._woken: asyncio.Future[str] = self._side.loop.create_future()
        self._disconnected = disconnected
        self._future: Future[Any] | None = future
        self.watch: asyncio.Future[None] | None = None

    async def wait(self, deadline: float | None) -> str:
        side = self._side
        assert self._future is not None, "a Wait waits once"
        self._future.add_done_callback(self._answered)
        timer = None
        if deadline is not None:
            remaining = max(0.0, deadline - time.monotonic())
            timer = side.loop.call_later(remaining, self.wake, EXPIRED)
        if self._disconnected is not None:
            side.watch_later(self)
        try:
            return await self._woken
        finally:
            if timer is not None:
                timer.cancel()
            if self._disconnected is not None:
                side.unwatch(self)
                self._disconnected = None
            if self.watch is not None:
                self.watch.cancel()
                self.watch = None
            self._future = None

    def _answered(self, _: object) -> None:
        """The future's callback, on the thread that finished it (a batch thread)."""
        self._side.post(self)

    def wake(self, why: str) -> None:
        if not self._woken.done():
            self._woken.set_result(why)

    def start_watch(self) -> None:
        assert self._disconnected is not None
        if self.watch is None and not self._woken.done():
            self.watch = asyncio.ensure_future(self._disconnected())
            self.watch.add_done_callback(lambda _: self.wake(GONE))


class _Side:
    """What the requests waiting on one loop share: the inbox of answered waits and the
    watch timer. ``post`` is called from any thread; everything else on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._inbox: deque[Wait] = deque()
        self._called = False  # a drain is scheduled and has not begun yet
        self._young: set[Wait] = set()  # waiting since the last tick
        self._old: set[Wait] = set()  # waiting since the tick before: watched next tick
        self._timer: asyncio.TimerHandle | None = None  # the next tick, while any waits

    def post(self, wait: Wait) -> None:
        self._inbox.append(wait)
        if not self._called:  # a drain clears the flag before it empties the inbox
            self._called = True
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._called = False
        inbox = self._inbox
        while inbox:
            inbox.popleft().wake(DONE)
        self._leave_if_unused()

    def watch_later(self, wait: Wait) -> None:
        self._young.add(wait)
        if self._timer is None:
            self._timer = self.loop.call_later(WATCH_AFTER_SECONDS, self._tick)

    def unwatch(self, wait: Wait) -> None:
        self._young.discard(wait)
        self._old.discard(wait)
        if not (self._young or self._old) and self._timer is not None:
            self._timer.cancel()  # the last one: no tick until another waits
            self._timer = None
            self._leave_if_unused()

    def _tick(self) -> None:
        for wait in self._old:
            wait.start_watch()
        self._old, self._young = self._young, set()
        self._timer = None
        if self._old:
            self._timer = self.loop.call_later(WATCH_AFTER_SECONDS, self._tick)
        else:
            self._leave_if_unused()

    def _leave_if_unused(self) -> None:
        if not (self._timer or self._called or self._inbox):
            with _sides_lock:
                if _sides.get(id(self.loop)) is self:
                    del _sides[id(self.loop)]


def _side(loop: asyncio.AbstractEventLoop) -> _Side:
    side = _sides.get(id(loop))
    if side is None or side.loop is not loop:
        with _sides_lock:
            side = _sides.get(id(loop))
            if side is None or side.loop is not loop:
                side = _sides[id(loop)] = _Side(loop)
    return side
