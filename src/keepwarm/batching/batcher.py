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

Callers: threads (``predict``) and asyncio (``predict_async``); both sit on ``submit``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from functools import partial

from keepwarm.batching.batch_queue import BatchQueue, Item
from keepwarm.batching.executor import Executor
from keepwarm.batching.latency import LatencyTable
from keepwarm.batching.merge import (
    NO_PADDING,
    Arrays,
    PadAxes,
    rows_and_key,
    rows_of,
)
from keepwarm.batching.runner import BatchRunner, Outcome, Predict
from keepwarm.batching.stats import BatchStats
from keepwarm.batching.waker import Waker
from keepwarm.errors import DeadlineExceededError, InvalidConfigError, UnavailableError


class Batcher:
    """See the module docstring. ``predict`` is the model's (inputs already coerced);
    ``name`` names the model in errors; ``slots`` (default: the executor's) bounds the
    batches of this model that run at once; ``crop_axes``: see ``merge.split``."""

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
        latency: LatencyTable | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for what, value in (("max_batch_size", max_batch_size), ("max_queue", max_queue)):
            if type(value) is not int or value < 1:
                raise InvalidConfigError(f"{what} must be an integer >= 1, got {value!r}")
        if isinstance(max_delay_ms, bool) or not max_delay_ms >= 0:
            raise InvalidConfigError(f"max_delay_ms must be a number >= 0, got {max_delay_ms!r}")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_delay = float(max_delay_ms) / 1000.0
        self.max_queue = max_queue
        self.pad_axes = pad_axes
        self.crop_axes = crop_axes  # per output, axes that may be cropped after padding
        self.latency = latency if latency is not None else LatencyTable(max_batch_size)
        self._predict = predict
        self._executor = executor
        self._slots = slots if slots is not None else executor.slots
        self._clock = clock
        self._lock = threading.Lock()
        self._running = 0
        self._closed = False
        self._waker = Waker(self._fire, name=name, clock=clock)
        self._runner = BatchRunner(predict, name, max_batch_size, pad_axes, crop_axes)
        self._stats = BatchStats()
        self._queue = BatchQueue(
            max_batch_size=max_batch_size,
            max_delay=self.max_delay,
            slots=self._slots,
            latency=self.latency,
            stats=self._stats,
            arm=self._waker.arm,
        )

    # ------------------------------------------------------------------ callers

    def submit(self, inputs: Arrays, *, deadline: float | None = None) -> Future[Arrays]:
        """Queue one request (inputs already checked against the signature); its future.
        ``deadline``: a ``time.monotonic()`` instant after which it must not run."""
        future, batch = self._enqueue(inputs, deadline)
        if batch:
            self._executor.submit(partial(self._work, batch))
        return future

    @property
    def full(self) -> bool:
        """Whether a request would be refused now (cancelled requests purged first)."""
        if len(self._queue.items) < self.max_queue:
            return False
        with self._lock:
            self._queue.purge(self._clock())
            return len(self._queue.items) >= self.max_queue

    def refuse(self) -> UnavailableError:
        """The error of a request refused for a full queue (counted as rejected)."""
        with self._lock:
            self._stats.rejected += 1
            queued = len(self._queue.items)
        return UnavailableError(
            f"model {self.name!r} is overloaded: {queued} requests are queued (max_queue); "
            "retry later"
        )

    def _enqueue(self, inputs: Arrays, deadline: float | None) -> tuple[Future[Arrays], list[Item]]:
        """Register the future, queue the request, and take a batch when a slot is free
        (the caller launches it)."""
        found = rows_and_key(inputs, self.pad_axes)
        rows, key = found if found is not None else (0, None)
        future: Future[Arrays] = Future()
        now = self._clock()
        item = Item(inputs, rows, key, future, deadline, now)
        queue = self._queue
        with self._lock:
            if self._closed:
                raise UnavailableError(f"model {self.name!r} is unloading; retry")
            if len(queue.items) >= self.max_queue:
                queue.purge(self._clock())
                if len(queue.items) >= self.max_queue:
                    self._stats.rejected += 1
                    raise UnavailableError(
                        f"model {self.name!r} is overloaded: {len(queue.items)} requests are "
                        "queued (max_queue); retry later"
                    )
            queue.append(item)
            batch, expired = queue.take(now) if self._running < self._slots else ([], [])
            if batch:
                self._running += 1
        self._expire(expired)
        return future, batch

    def start(self, inputs: Arrays, *, deadline: float | None = None) -> Future[Arrays]:
        """``submit`` for a caller on a thread that may block (never the event loop): when
        a slot is free the batch runs here, at once (no hand-off), and the future returned
        is done; else it is pending (and can be cancelled until its batch starts). What
        gathered meanwhile goes to the executor."""
        outcome = self._run_now(inputs, deadline)
        if outcome is None:
            pending, batch = self._enqueue(inputs, deadline)
            if batch:
                self._work(batch, inline=True)
            return pending
        future: Future[Arrays] = Future()
        outcome.deliver([future])
        return future

    def predict(self, inputs: Arrays, *, timeout: float | None = None) -> Arrays:
        """Run one request from a thread; ``DeadlineExceededError`` after ``timeout`` s
        (the batch runs on this thread when a slot is free: see ``start``)."""
        deadline = None if timeout is None else self._clock() + timeout
        outcome = self._run_now(inputs, deadline)
        if outcome is not None:
            if outcome.error is not None:
                raise outcome.error
            return outcome.results[0]
        future, batch = self._enqueue(inputs, deadline)
        if batch:
            self._work(batch, inline=True)
        try:
            return future.result(None if deadline is None else max(0.0, deadline - self._clock()))
        except DeadlineExceededError:
            raise
        except TimeoutError:
            future.cancel()  # leaves the queue if not batched yet; a running batch runs on
            raise self._deadline_error(timeout) from None

    def _run_now(self, inputs: Arrays, deadline: float | None) -> Outcome | None:
        """The fast path of a thread caller: when a slot is free and nothing is queued, run
        the request here, never queued; None when it must queue."""
        rows = rows_of(inputs)
        now = self._clock()
        with self._lock:
            if (
                self._running >= self._slots
                or self._queue.items
                or self._closed
                or (deadline is not None and deadline <= now)
            ):
                return None
            self._running += 1
            self._queue.rate.arrived(rows or 1, now)
        outcome = self._runner.run_one(inputs, rows)
        with self._lock:
            self._account(outcome, 1)
            if not self._queue.items:  # nothing gathered meanwhile: the idle case
                self._running -= 1
                return outcome
            batch, expired = self._next_batch()
        self._expire(expired)
        if batch:
            self._executor.submit(partial(self._work, batch))
        return outcome

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

    def _deadline_error(self, timeout: float | None) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"model {self.name!r}: the request's deadline ({timeout:g} s) passed before its answer"
        )

    # ----------------------------------------------------------------- dispatch

    def _expire(self, items: list[Item]) -> None:
        self._stats.expired += len(items)  # a race with a reader costs one count at most
        for item in items:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(
                    DeadlineExceededError(
                        f"model {self.name!r}: the request's deadline passed while it was "
                        "queued; it was not run"
                    )
                )

    def _work(self, batch: list[Item], *, inline: bool = False) -> None:
        """Run ``batch``, then every batch that gathered meanwhile, on this slot; a
        caller's thread (``inline``) hands those to the executor instead."""
        while batch:
            started = self._clock()
            outcome = self._runner.run([item.inputs for item in batch], [i.rows for i in batch])
            waited = [started - item.queued_at for item in batch]
            with self._lock:
                self._account(outcome, len(batch), sum(waited), max(waited))
                done, (batch, expired) = batch, self._next_batch()
            outcome.deliver([item.future for item in done])
            self._expire(expired)
            if batch and inline:
                self._executor.submit(partial(self._work, batch))
                return

    def _next_batch(self) -> tuple[list[Item], list[Item]]:
        """After a batch (under the lock): the batch this slot runs next and the requests
        whose deadline passed, or, when nothing gathered meanwhile, the slot given back."""
        if self._queue.items:
            batch, expired = self._queue.take(self._clock(), force=self._closed)
        else:
            batch, expired = [], []
        if not batch:
            self._running -= 1
        return batch, expired

    def _account(
        self, outcome: Outcome, requests: int, waited: float = 0.0, longest: float = 0.0
    ) -> None:
        """Count a batch of ``requests`` that ran, queued ``waited`` seconds in all and
        ``longest`` at most (under the lock), and time it into the latency table."""
        if outcome.seconds is not None:
            self.latency.record(outcome.bucket, outcome.seconds)
        stats = self._stats
        if outcome.error is not None:
            stats.failed += requests
            return
        stats.batches += 1
        stats.requests += requests
        stats.rows += outcome.rows
        stats.padded_rows += outcome.padded
        stats.batch_sizes[outcome.bucket] = stats.batch_sizes.get(outcome.bucket, 0) + 1
        if waited:
            stats.queue_seconds_sum += waited
            stats.queue_seconds_max = max(stats.queue_seconds_max, longest)

    def _fire(self) -> None:
        """The waker's call: dispatch the held partial batch if a slot is free."""
        launch: list[Item] = []
        expired: list[Item] = []
        with self._lock:
            if self._running < self._slots:
                launch, expired = self._queue.take(self._clock(), force=True)
                if launch:
                    self._running += 1
        self._expire(expired)
        if launch:
            self._executor.submit(partial(self._work, launch))

    # ------------------------------------------------------------------- status

    @property
    def queued(self) -> int:
        return len(self._queue.items)

    def stats(self) -> BatchStats:
        with self._lock:
            return self._stats.copy()

    def close(self) -> None:
        """Take no new requests; those queued still run (they hold their version)."""
        with self._lock:
            self._closed = True
            batch, expired = (
                self._queue.take(self._clock(), force=True)
                if self._running < self._slots
                else ([], [])
            )
            if batch:
                self._running += 1
        self._expire(expired)
        if batch:
            self._executor.submit(partial(self._work, batch))
        self._waker.close()
