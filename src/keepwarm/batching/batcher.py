"""The Batcher of one served version: a bounded queue in front of a model.

- ``submit`` registers the request's future, then queues it; past ``max_queue`` it raises
  ``UnavailableError`` at once (nothing is queued).
- When an executor slot is free the queue is dispatched at once: no request waits while
  the model is idle. While batches run, arrivals gather and the next batch takes them,
  first come first served, up to ``max_batch_size`` rows (a request's own rows count).
  A partial batch is held only when the latency table says waiting pays
  (``keepwarm.batching.latency``), never past ``max_delay``. The queue and that choice
  are ``keepwarm.batching.batch_queue``'s.
- A request whose deadline passed in the queue fails with ``DeadlineExceededError`` and
  is not run; a cancelled one (its caller went away) leaves the queue before it is
  batched; a running batch is never interrupted.

Callers: threads (``predict``, and ``start`` from a server's worker thread) and asyncio
(``submit``, ``predict_async``). A thread caller runs the batch itself when a slot is free;
one whose request had to queue waits as a follower and may be handed the next batch to
run (``keepwarm.batching.relay``), so batches at low concurrency need no executor thread.
The thread callers' paths are ``keepwarm.batching.callers``'s (inherited).
Admission (``reserve``): a server reserves a place in the queue before it reads a body,
so that what it has admitted and not yet queued counts toward ``max_queue``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future

from keepwarm.batching.batch_queue import BatchQueue
from keepwarm.batching.callers import ThreadCallers
from keepwarm.batching.dispatch import Dispatch
from keepwarm.batching.executor import Executor
from keepwarm.batching.latency import LatencyTable
from keepwarm.batching.loose import Loose, Predicting
from keepwarm.batching.merge import NO_PADDING, Arrays, PadAxes
from keepwarm.batching.runner import BatchRunner, Predict
from keepwarm.batching.stats import BatchStats
from keepwarm.batching.waker import Waker
from keepwarm.config_batching import check_max_batch_size
from keepwarm.errors import DeadlineExceededError, InvalidConfigError, UnavailableError

#: How long a server's worker thread waits as a follower before it hands its request to
#: the event loop (which can see the client go away); low-concurrency batches end sooner.
FOLLOW_SECONDS = 0.02
#: ``predict``'s callers, per slot, that each run alone (see ``Dispatch.run_now``).
CROWD_PER_SLOT = 4


class Batcher(ThreadCallers):
    """See the module docstring. ``predict`` is the model's (inputs already coerced);
    ``name`` names the model in errors; ``slots`` (default: the executor's) bounds the
    batches of this model that run at once, ``alone`` (default: ``slots``) the requests
    that run at once, each alone, while nothing is queued; ``crowd`` (default:
    ``CROWD_PER_SLOT`` per slot) how many ``predict`` callers may be in at once, each
    running alone, before their requests queue to be batched; ``crop_axes``: see
    ``merge.split``;
    ``follow_seconds``: how long ``start`` waits for a queued request's batch."""

    def __init__(
        self,
        predict: Predict,
        *,
        name: str,
        executor: Executor,
        max_batch_size: int = 32,
        max_delay_ms: float = 5.0,
        max_queue: int = 256,
        pad_axes: PadAxes = NO_PADDING,
        crop_axes: Mapping[str, tuple[int, ...]] | None = None,
        slots: int | None = None,
        alone: int | None = None,
        crowd: int | None = None,
        latency: LatencyTable | None = None,
        clock: Callable[[], float] = time.monotonic,
        follow_seconds: float = FOLLOW_SECONDS,
    ) -> None:
        check_max_batch_size(max_batch_size)  # the server's default too (Settings.batching)
        if type(max_queue) is not int or max_queue < 1:
            raise InvalidConfigError(f"max_queue must be an integer >= 1, got {max_queue!r}")
        if isinstance(max_delay_ms, bool) or not max_delay_ms >= 0:
            raise InvalidConfigError(f"max_delay_ms must be a number >= 0, got {max_delay_ms!r}")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_delay = float(max_delay_ms) / 1000.0
        self.max_queue = max_queue
        self.pad_axes = pad_axes
        self.crop_axes = crop_axes  # per output, axes that may be cropped after padding
        self.latency = latency if latency is not None else LatencyTable(max_batch_size)
        slots = slots if slots is not None else executor.slots
        # Server threads that wait as followers, at most: the others go back to their
        # pool, so that a full batch can still gather behind them.
        self._follow_limit = 2 * slots
        self._follow_seconds = follow_seconds
        self._kicking: asyncio.AbstractEventLoop | None = None  # a loop whose call is due
        self._clock = clock
        self._waker = Waker(self._fire, name=name, clock=clock)
        stats = BatchStats()
        self._queue = BatchQueue(
            max_batch_size=max_batch_size,
            max_delay=self.max_delay,
            slots=slots,
            latency=self.latency,
            stats=stats,
            arm=self._waker.arm,
        )
        runner = BatchRunner(predict, name, max_batch_size, pad_axes, crop_axes, self.latency)
        crowd = CROWD_PER_SLOT * slots if crowd is None else crowd
        self._loose = Loose(
            runner, self._queue, self.latency, crowd=crowd, slow=self._predict, clock=clock,
            fire=self._kick, fold=self._fold,
        )  # fmt: skip
        #: Run one request from a thread (``Loose.predict``, called with no frame here;
        #: see ``start`` and ``_predict``); ``DeadlineExceededError`` after ``timeout`` s.
        self.predict: Predicting = self._loose.predict
        self._dispatch = Dispatch(
            name=name,
            queue=self._queue,
            runner=runner,
            executor=executor,
            slots=slots,
            alone=slots if alone is None else alone,
            loose=self._loose,
            max_queue=max_queue,
            pad_axes=pad_axes,
            latency=self.latency,
            stats=stats,
            clock=clock,
        )
        #: Reserve a place in the queue for a request admitted now (False: full); the
        #: caller gives it back with ``unreserve`` once the request is queued or has
        #: failed. Every request's admission calls both: the dispatch's own methods.
        self.reserve: Callable[[], bool] = self._dispatch.reserve
        self.unreserve: Callable[[], None] = self._dispatch.unreserve

    # ------------------------------------------------------------------ callers

    def submit(self, inputs: Arrays, *, deadline: float | None = None) -> Future[Arrays]:
        """Queue one request (inputs already checked against the signature); its future.
        ``deadline``: a ``time.monotonic()`` instant after which it must not run."""
        future, batch = self._dispatch.enqueue(inputs, deadline, None)
        if batch:
            self._dispatch.launch(batch)
        return future

    def submit_from_loop(
        self,
        inputs: Arrays,
        *,
        deadline: float | None = None,
        prepare: Callable[[Arrays], object] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Future[Arrays]:
        """``submit`` from an event loop: the request is queued now and dispatched once the
        loop has run the callbacks already due (``call_soon``), so that requests the loop
        is parsing in the same pass join one batch instead of each taking a free slot
        alone (a loop that feeds requests one at a time otherwise makes batches of 1).
        ``prepare``: done with the outputs on the batch thread (``Pending.prepare``);
        ``loop``: the running loop, when the caller has it already."""
        future, _ = self._dispatch.enqueue(inputs, deadline, None, take=False, prepare=prepare)
        if loop is None:
            loop = asyncio.get_running_loop()
        if self._kicking is not loop:  # one call per loop pass, for all it queues
            self._kicking = loop
            loop.call_soon(self._kick_queued)
        return future

    def _kick_queued(self) -> None:
        """The loop's call after its requests queued (``submit_from_loop``): a batch on
        each free slot that takes one (``fire`` True: a batch left, more queued). One
        call per pass, not one per request: the calls after the first found the queue
        taken (the MLP at 4 clients: 3 calls of 4 for nothing, each ~3.5 µs of the loop's:
        ``call_soon`` 1.2, ``fire`` on an empty queue 2.2)."""
        self._kicking = None  # before the queue is read: one queued later calls again
        while self._dispatch.fire(force=False):
            pass

    def _kick(self) -> None:
        self._dispatch.fire(force=False)

    def _fold(self) -> None:
        self._dispatch.fold()

    async def predict_async(self, inputs: Arrays, *, timeout: float | None = None) -> Arrays:
        """Run one request from a coroutine; cancelling it takes the request out of the
        queue (unless its batch already runs)."""
        deadline = None if timeout is None else self._clock() + timeout
        waiter = asyncio.wrap_future(self.submit(inputs, deadline=deadline))
        try:
            if timeout is None:
                return await waiter
            return await asyncio.wait_for(waiter, timeout)
        except DeadlineExceededError:
            raise
        except TimeoutError:
            raise self._deadline_error(timeout) from None

    # ---------------------------------------------------------------- admission

    @property
    def full(self) -> bool:
        """Whether a request would be refused now (cancelled requests purged first)."""
        return self._dispatch.full()

    def refuse(self) -> UnavailableError:
        """The error of a request refused for a full queue (counted as rejected)."""
        return self._dispatch.refuse()

    def _fire(self) -> None:
        """The waker's call (a held partial batch is due)."""
        self._dispatch.fire()

    def cap_batches(self, rows: int | None) -> None:
        """While larger buckets warm (``BatchedModel.warm_buckets``): no batch of more than
        ``rows`` rows (a warm bucket) is formed, and a request of more rows runs in pieces
        of ``rows``; None: up to ``max_batch_size`` again."""
        self.latency.cap = self.max_batch_size if rows is None else min(rows, self.max_batch_size)
        self._loose.cap(self.latency.cap)

    # ------------------------------------------------------------------- status

    @property
    def idle(self) -> bool:
        """No batch of this model runs and nothing is queued, and its requests came one
        at a time lately (``pipeline``'s rows in the system: at most one); a snapshot."""
        return self._dispatch.idle

    @property
    def queued(self) -> int:
        return len(self._queue.items)

    def stats(self) -> BatchStats:
        return self._dispatch.counters()

    def close(self) -> None:
        """Take no new requests; those queued still run (they hold their version)."""
        self._loose.close()
        self._dispatch.close()
        self._waker.close()
