"""What a request run on its caller's own thread (the gRPC server's handler threads) waits
on: a slot among the service's ``workers`` (so that no more models run at once than on
the event loop's thread pool), then, for a request its batcher queued, its batch. Either
wait ends when the request's deadline passes or when its client goes away (``Call.leave``,
from gRPC's termination callback): a request that has not started is then never run."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from keepwarm.batching.serving import Queued, abandon
from keepwarm.errors import DeadlineExceededError
from keepwarm.service_book import Gone


class Call:
    """One blocking request's wake-up: ``leave()`` when its client went away, ``nudge()``
    when what it waits for may be there."""

    __slots__ = ("_wake", "left")

    def __init__(self) -> None:
        self.left = False
        self._wake = threading.Event()

    def leave(self) -> None:
        self.left = True
        self._wake.set()

    def nudge(self) -> None:
        self._wake.set()

    def wait(self, deadline: float | None) -> None:
        """Until nudged, left or ``deadline`` (``time.monotonic()``) passes."""
        timeout = None
        if deadline is not None:  # bounded: an absurd deadline must not overflow the wait
            timeout = min(max(0.0, deadline - time.monotonic()), threading.TIMEOUT_MAX)
        self._wake.wait(timeout)
        self._wake.clear()

    def check(self, deadline: float | None, why: str) -> None:
        """``Gone`` when the client left; ``DeadlineExceededError`` (``why``) past it."""
        if self.left:
            raise Gone()
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceededError(why)


class Slots:
    """``n`` slots handed out first come, first served."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._lock = threading.Lock()
        self._waiting: deque[Call] = deque()
        self._granted: set[Call] = set()

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot."""
        return len(self._waiting)

    @contextmanager
    def hold(self, call: Call, deadline: float | None, why: str) -> Iterator[None]:
        """A slot for the block; ``Gone`` or ``DeadlineExceededError`` (``why``) if the
        call leaves or its deadline passes while it waits."""
        self._acquire(call, deadline, why)
        try:
            yield
        finally:
            self._release()

    def _acquire(self, call: Call, deadline: float | None, why: str) -> None:
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
                return
            self._waiting.append(call)
        while True:
            call.wait(deadline)
            with self._lock:
                if call in self._granted:
                    self._granted.discard(call)
                    return
                try:
                    call.check(deadline, why)
                except BaseException:
                    self._waiting.remove(call)
                    raise

    def _release(self) -> None:
        with self._lock:
            if not self._waiting:
                self._free += 1
                return
            call = self._waiting.popleft()
            self._granted.add(call)
        call.nudge()


def wait_queued(queued: Queued, call: Call) -> dict[str, np.ndarray]:
    """The outputs of ``queued`` (a request its batcher queued); it leaves the queue
    (unless its batch runs) when its deadline passes or its client goes away, and its
    lease is let go once its batch no longer needs the model."""
    future = queued.future
    future.add_done_callback(lambda _: call.nudge())
    why = f"model {queued.name!r}: the request's deadline passed while it waited for its batch"
    try:
        while not future.done():
            call.check(queued.deadline, why)
            call.wait(queued.deadline)
        return future.result()
    finally:
        abandon(queued)  # done: the lease goes back now; else it leaves the queue
