"""An event loop's requests queued for their batch (``enqueue_from_loop``): the loop only
queues; when a slot is free and no batch thread is called already, it calls one after its
pass (``call``, through ``Batcher.submit_from_loop``), and that thread takes the batch
itself when it runs (``gather``), so that what the loop queues meanwhile (the requests it
parses in the same pass, at the least) joins that batch. ``Dispatch``
(``keepwarm.batching.dispatch``) is its only subclass and sets the state used here;
everything that changes the queue or the slots takes its lock.

Why the batch thread takes the batch: ``py-spy --gil`` on the served MLP at 4 clients
(batching on, one process, 8 s) put the loop's callback that took it after each pass
(``_kick_queued``: ``fire``, the queue's ``take``, the executor's wake-up) at 21 µs of the
loop's 355 µs a request (batches of 1-2 at 4 clients; batching off's one hop: 34 µs).
The thread is called after the loop's pass, not from ``enqueue_from_loop`` at once: posting
its wake-up lets go of the interpreter lock, the thread woken takes a batch of one before
the loop queues the rest of its pass, and batches shrink (``bench/ab.py``, MLP, 5 rounds,
against the loop taking the batch: called at once 0.77x req/s at 4 clients, 0.72x at 32,
server CPU per request 1.25x and 1.46x; after the pass 0.95x, 0.96x, CPU 1.00x, 1.07x, the
loop's CPU per request 0.96x; 1.09x at 8 clients, CPU 0.88x; a full test suite ran
beside that run).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

from keepwarm.batching.batch_queue import BatchQueue, Item
from keepwarm.batching.executor import Executor
from keepwarm.batching.loose import Loose
from keepwarm.batching.merge import Arrays
from keepwarm.batching.relay import Follower
from keepwarm.batching.stats import BatchStats

_log = logging.getLogger("keepwarm.batching")


class LoopFeed:
    """The event loop's way into a ``Dispatch`` (its base; see the module docstring).
    ``_calling``: a ``gather`` is on its way to a batch thread and has not begun (its
    slot counted in ``_running`` already)."""

    name: str
    queue: BatchQueue
    stats: BatchStats
    _lock: threading.Lock
    _clock: Callable[[], float]
    _executor: Executor
    _loose: Loose
    _slots: int
    _running: int
    _closed: bool
    _calling: bool

    # Dispatch's and Admission's (annotations only: nothing here shadows them)
    _item: Callable[
        [Arrays, float | None, Follower | None, Callable[[Arrays], object] | None], Item
    ]
    _append: Callable[[Item], None]
    _full: Callable[[], bool]
    expire: Callable[[list[Item]], None]
    work: Callable[[list[Item]], KeyboardInterrupt | None]

    def enqueue_from_loop(
        self,
        inputs: Arrays,
        deadline: float | None,
        prepare: Callable[[Arrays], object] | None,
    ) -> tuple[Future[Arrays], bool]:
        """``enqueue`` from an event loop: queue the request; True when a slot is free and
        no ``gather`` is on its way already: the caller then calls ``call`` (once the
        loop has queued the requests of its pass), for one batch thread (the slot
        reserved for it), which takes the batch itself once it runs: what the loop
        queues meanwhile joins that batch, and the loop never reads the queue."""
        item = self._item(inputs, deadline, None, prepare)
        loose = self._loose
        with self._lock:
            self._append(item)
            call = not self._calling and self._running + len(loose.runs) < self._slots
            if call:
                self._calling = True
                self._running += 1
        return item.future, call

    def call(self) -> None:
        """After ``enqueue_from_loop`` said so: ``gather`` posted to a batch thread. When
        the executor refuses it, the slot is given back and the requests stay queued,
        for the next call or batch (or ``close``) to take."""
        self._call()

    def _call(self) -> bool:
        """Post ``gather`` to a batch thread (its slot and ``_calling`` set already);
        False, the slot given back, when the executor refused it (closed, or no thread
        could start)."""
        try:
            self._executor.run(self.gather)
        except Exception:
            _log.exception("model %r: a batch thread could not be called", self.name)
            with self._lock:
                self._calling = False
                self._running -= 1
            return False
        return True

    def gather(self) -> None:
        """On a batch thread called by ``call`` (holding a slot): take the batch of what
        is queued now (held, as ``fire(force=False)`` holds, when waiting pays) and run
        it here, after calling another thread when a batch is left for a free slot;
        nothing taken: the slot is given back."""
        with self._lock:
            self._calling = False
            loose = self._loose
            if loose.unfolded:  # the queue's choices below read the latency table
                loose.fold(self.stats)
            batch, expired = self.queue.take(
                self._clock(), force=self._closed, others=self._running - 1, full=self._full()
            )
            if not batch:
                self._running -= 1
            again = (
                bool(batch)
                and self._running + len(loose.runs) < self._slots
                and any(not item.future.cancelled() for item in self.queue.items)
            )
            if again:
                self._calling = True
                self._running += 1
        self.expire(expired)
        if again:
            self._call()
        if batch:
            self.work(batch)
