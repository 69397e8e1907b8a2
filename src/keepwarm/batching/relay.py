"""Leader/follower: a batch formed while threads wait runs on one of those threads.

A caller on a thread that may block (``Batcher.predict``; ``Batcher.start`` from a
server's worker thread) whose request had to queue waits as a ``Follower``. When a slot
frees and the next batch holds a waiting follower, that follower is woken and handed the
batch (it *leads*): it runs the batch on its own thread and delivers the others' results,
its own among them. So a batch gathered at low concurrency costs one thread wake-up, not
two (a hand-off to an executor thread, then the result back), and no executor thread
competes for the GIL. A batch with no follower waiting goes to the executor as before.

The rules that keep it safe: a follower is handed a batch (``lead``) only under the
batcher's lock, and it stops waiting (``leave``, after its wait timed out) only under
the same lock; so a handed batch always has a thread to run it. A follower is woken
when its request's future is done (a result, an error, or cancelled: its caller went
away) or when it is handed its batch; a future handed over is running, so it is never
cancelled, and the one wake is the hand-over.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keepwarm.batching.batch_queue import Item


class Follower:
    """One waiting thread caller (see the module docstring)."""

    __slots__ = ("_wake", "_woken", "batch", "waiting")

    def __init__(self) -> None:
        self._wake = threading.Lock()
        self._wake.acquire()  # released once: result delivered, or batch handed over
        self._woken = False
        self.batch: list[Item] | None = None  # the batch handed to it, to run
        self.waiting = True  # may be handed a batch (read and written under the lock)

    def wait(self, timeout: float | None) -> bool:
        """Block until woken (True) or ``timeout`` seconds pass (False)."""
        if timeout is None:
            return self._wake.acquire()
        return self._wake.acquire(timeout=max(0.0, timeout))

    def wake(self) -> None:
        """Let the waiting thread go (at most once; later calls do nothing)."""
        if not self._woken:
            self._woken = True
            self._wake.release()

    def done(self, _future: object) -> None:
        """The request's future callback: its outcome is in (or it was cancelled)."""
        self.wake()


def hand_over(batch: list[Item]) -> bool:
    """Under the batcher's lock: give ``batch`` to the first follower in it that still
    waits, and wake it to run the batch; False when none waits (the executor runs it)."""
    for item in batch:
        follower = item.follower
        if follower is not None and follower.waiting:
            follower.waiting = False
            follower.batch = batch
            follower.wake()
            return True
    return False
