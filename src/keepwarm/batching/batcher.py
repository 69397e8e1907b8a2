"""The Batcher of one served version: a bounded queue in front of a model.

- ``submit`` registers the request's future, then queues it; past ``max_queue`` it raises
  ``UnavailableError`` at once (nothing is queued).
- When an executor slot is free the queue is dispatched at once: no request waits while
  the model is idle. While batches run, arrivals gather and the next batch takes them,
  first come first served, up to ``max_batch_size`` rows (a request's own rows count).
  A partial batch is held only when the latency table says waiting pays
  (``keepwarm.batching.latency``), never past ``max_delay``.
- A request whose deadline passed in the queue fails with ``DeadlineExceededError`` and
  is not run; a cancelled one (its caller went away) leaves the queue before it is
  batched; a running batch is never interrupted.

Callers: threads (``predict``) and asyncio (``predict_async``); both sit on ``submit``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

import numpy as np

from keepwarm.batching.executor import Executor
from keepwarm.batching.latency import ArrivalRate, LatencyTable, wait_seconds
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


@dataclass(slots=True, eq=False)
class _Item:
    inputs: Mapping[str, np.ndarray]
    rows: int  # 0: cannot be batched, runs alone
    key: Hashable
    future: Future[Arrays]
    deadline: float | None
    queued_at: float


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
        self._queue: deque[_Item] = deque()
        self._running = 0
        self._closed = False
        self._rate = ArrivalRate()
        self._held_rows = 0  # rows of the batch being held for more (0: none held)
        self._no_wait_until = 0.0  # holding paid nothing lately: not before this
        self._penalty = _FIRST_PENALTY
        self._waker = Waker(self._fire, name=name, clock=clock)
        self._runner = BatchRunner(predict, name, max_batch_size, pad_axes, crop_axes, self.latency)
        self._stats = BatchStats()

    # ------------------------------------------------------------------ callers

    def submit(
        self, inputs: Mapping[str, np.ndarray], *, deadline: float | None = None
    ) -> Future[Arrays]:
        """Queue one request (inputs already checked against the signature); its future.
        ``deadline``: a ``time.monotonic()`` instant after which it must not run."""
        future, batch = self._enqueue(inputs, deadline)
        if batch:
            self._executor.submit(partial(self._work, batch))
        return future

    @property
    def full(self) -> bool:
        """Whether a request would be refused now (cancelled requests purged first)."""
        if len(self._queue) < self.max_queue:
            return False
        with self._lock:
            self._purge()
            return len(self._queue) >= self.max_queue

    def refuse(self) -> UnavailableError:
        """The error of a request refused for a full queue (counted as rejected)."""
        with self._lock:
            self._stats.rejected += 1
            queued = len(self._queue)
        return UnavailableError(
            f"model {self.name!r} is overloaded: {queued} requests are queued (max_queue); "
            "retry later"
        )

    def _enqueue(
        self, inputs: Mapping[str, np.ndarray], deadline: float | None
    ) -> tuple[Future[Arrays], list[_Item]]:
        """Register the future, queue the request, and take a batch when a slot is free
        (the caller launches it)."""
        found = rows_and_key(inputs, self.pad_axes)
        rows, key = found if found is not None else (0, None)
        future: Future[Arrays] = Future()
        now = self._clock()
        item = _Item(inputs, rows, key, future, deadline, now)
        with self._lock:
            if self._closed:
                raise UnavailableError(f"model {self.name!r} is unloading; retry")
            if len(self._queue) >= self.max_queue:
                self._purge()
                if len(self._queue) >= self.max_queue:
                    self._stats.rejected += 1
                    raise UnavailableError(
                        f"model {self.name!r} is overloaded: {len(self._queue)} requests are "
                        "queued (max_queue); retry later"
                    )
            self._queue.append(item)
            self._rate.arrived(max(rows, 1), now)
            batch, expired = self._take(now) if self._running < self._slots else ([], [])
            if batch:
                self._running += 1
        self._expire(expired)
        return future, batch

    def start(
        self, inputs: Mapping[str, np.ndarray], *, deadline: float | None = None
    ) -> Future[Arrays]:
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

    def predict(self, inputs: Mapping[str, np.ndarray], *, timeout: float | None = None) -> Arrays:
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

    def _run_now(self, inputs: Mapping[str, np.ndarray], deadline: float | None) -> Outcome | None:
        """The fast path of a thread caller: when a slot is free and nothing is queued, run
        the request here, never queued; None when it must queue."""
        rows = rows_of(inputs)
        now = self._clock()
        with self._lock:
            if (
                self._running >= self._slots
                or self._queue
                or self._closed
                or (deadline is not None and deadline <= now)
            ):
                return None
            self._running += 1
            self._rate.arrived(max(rows, 1), now)
        outcome = self._runner.run([inputs], [rows])
        with self._lock:
            self._account(outcome, [0.0])
            batch, expired = self._take(self._clock())
            if not batch:
                self._running -= 1
        self._expire(expired)
        if batch:
            self._executor.submit(partial(self._work, batch))
        return outcome

    async def predict_async(
        self, inputs: Mapping[str, np.ndarray], *, timeout: float | None = None
    ) -> Arrays:
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

    def _purge(self) -> None:
        """Drop cancelled requests (under the lock)."""
        now = self._clock()
        for item in self._queue:
            if item.future.cancelled():
                self._count_dropped(item, now)
        self._queue = deque(item for item in self._queue if not item.future.cancelled())

    def _count_dropped(self, item: _Item, now: float) -> None:
        """A request cancelled in the queue: past its deadline (its caller gave up on it,
        as an event loop's timeout does) it counts as expired, else as cancelled."""
        if _late(item, now):
            self._stats.expired += 1
        else:
            self._stats.cancelled += 1

    def _take(self, now: float, *, force: bool = False) -> tuple[list[_Item], list[_Item]]:
        """The next batch (possibly empty: nothing queued, or waiting pays), and requests
        whose deadline passed (to fail outside the lock). Under the lock."""
        expired: list[_Item] = []
        queue = self._queue
        while True:
            while queue and (queue[0].future.cancelled() or _late(queue[0], now)):
                head = queue.popleft()
                if head.future.cancelled():
                    self._count_dropped(head, now)
                else:
                    expired.append(head)
            if not queue:
                return [], expired
            batch = self._gather(now)
            total = sum(item.rows for item in batch)
            if (
                not (force or self._closed)
                and batch[0].rows
                and total < self.max_batch_size
                and now >= self._no_wait_until
            ):
                wait = wait_seconds(
                    total,
                    self._rate.rows_per_second(now),
                    self.latency,
                    slots=self._slots,
                    max_batch_size=self.max_batch_size,
                    max_delay=self.max_delay,
                )
                if wait > 0:
                    if not self._held_rows:
                        self._held_rows = total
                        self._stats.waits += 1
                    self._waker.arm(now + wait)
                    return [], expired
            if self._held_rows:
                self._judge_wait(total, now)
            chosen = {id(item) for item in batch}
            if len(chosen) == len(queue) or all(id(queue[i]) in chosen for i in range(len(chosen))):
                for _ in range(len(chosen)):
                    queue.popleft()
            else:
                self._queue = queue = deque(i for i in queue if id(i) not in chosen)
            # From here a request can no longer be cancelled: its batch will run.
            running = [item for item in batch if item.future.set_running_or_notify_cancel()]
            self._stats.cancelled += len(batch) - len(running)
            if running:
                return running, expired

    def _judge_wait(self, rows: int, now: float) -> None:
        """After a held batch: when no rows joined it (its callers were all there already,
        as closed-loop clients are), stop holding batches for a while, doubling each time
        it happens again (under the lock)."""
        if rows > self._held_rows:
            self._penalty = _FIRST_PENALTY
        else:
            self._no_wait_until = now + self._penalty
            self._penalty = min(2 * self._penalty, _MAX_PENALTY)
        self._held_rows = 0

    def _gather(self, now: float) -> list[_Item]:
        """The head, and the queued requests of its shape that fit beside it, in order."""
        head = self._queue[0]
        batch = [head]
        if head.key is None or head.rows >= self.max_batch_size:
            return batch
        total, limit = head.rows, self.max_batch_size
        for index in range(1, len(self._queue)):
            item = self._queue[index]
            if item.key != head.key or item.future.cancelled() or _late(item, now):
                continue
            if total + item.rows > limit:
                break
            batch.append(item)
            total += item.rows
            if total == limit:
                break
        # Fewer rows when the latency table says a smaller batch serves a row for less
        # (padding up to a bucket costs, and large batches can fall out of the caches).
        best = self.latency.best_size(total)
        while len(batch) > 1 and total > best:
            total -= batch.pop().rows
        return batch

    def _expire(self, items: list[_Item]) -> None:
        self._stats.expired += len(items)  # a race with a reader costs one count at most
        for item in items:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(
                    DeadlineExceededError(
                        f"model {self.name!r}: the request's deadline passed while it was "
                        "queued; it was not run"
                    )
                )

    def _work(self, batch: list[_Item], *, inline: bool = False) -> None:
        """Run ``batch``, then every batch that gathered meanwhile, on this slot; a
        caller's thread (``inline``) hands those to the executor instead."""
        while batch:
            started = self._clock()
            outcome = self._runner.run([item.inputs for item in batch], [i.rows for i in batch])
            with self._lock:
                self._account(outcome, [started - item.queued_at for item in batch])
                done, (batch, expired) = batch, self._take(self._clock())
                if not batch:
                    self._running -= 1
            outcome.deliver([item.future for item in done])
            self._expire(expired)
            if batch and inline:
                self._executor.submit(partial(self._work, batch))
                return

    def _account(self, outcome: Outcome, delays: list[float]) -> None:
        """Count a batch that ran (under the lock)."""
        stats = self._stats
        if outcome.error is not None:
            stats.failed += len(delays)
            return
        stats.batches += 1
        stats.requests += len(delays)
        stats.rows += outcome.rows
        stats.padded_rows += outcome.padded
        stats.batch_sizes[outcome.bucket] = stats.batch_sizes.get(outcome.bucket, 0) + 1
        stats.queue_seconds_sum += sum(delays)
        stats.queue_seconds_max = max(stats.queue_seconds_max, *delays)

    def _fire(self) -> None:
        """The waker's call: dispatch the held partial batch if a slot is free."""
        launch: list[_Item] = []
        expired: list[_Item] = []
        with self._lock:
            if self._running < self._slots:
                launch, expired = self._take(self._clock(), force=True)
                if launch:
                    self._running += 1
        self._expire(expired)
        if launch:
            self._executor.submit(partial(self._work, launch))

    # ------------------------------------------------------------------- status

    @property
    def queued(self) -> int:
        return len(self._queue)

    def stats(self) -> BatchStats:
        with self._lock:
            return self._stats.copy()

    def close(self) -> None:
        """Take no new requests; those queued still run (they hold their version)."""
        with self._lock:
            self._closed = True
            batch, expired = (
                self._take(self._clock(), force=True) if self._running < self._slots else ([], [])
            )
            if batch:
                self._running += 1
        self._expire(expired)
        if batch:
            self._executor.submit(partial(self._work, batch))
        self._waker.close()


_FIRST_PENALTY = 0.1  # seconds without holding batches after a hold that gained nothing
_MAX_PENALTY = 5.0


def _late(item: _Item, now: float) -> bool:
    return item.deadline is not None and item.deadline <= now
