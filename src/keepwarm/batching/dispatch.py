"""The running side of a ``Batcher``: its lock, queue and slots; queuing a request, taking and
running batches on callers' threads (``relay``'s leader/follower) or the executor, failing
expired requests; admission (the full-queue rule, places reserved in the queue) is its base
``Admission`` (``keepwarm.batching.admission``). The batcher is its only user; what changes
the queue or the slots takes the lock, and batches run outside it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial

from keepwarm.batching.admission import Admission
from keepwarm.batching.batch_queue import BatchQueue, Item
from keepwarm.batching.executor import Executor
from keepwarm.batching.latency import LatencyTable
from keepwarm.batching.loose import Loose
from keepwarm.batching.merge import Arrays, PadAxes, rows_and_key, rows_of
from keepwarm.batching.pending import Pending
from keepwarm.batching.relay import Follower, hand_over
from keepwarm.batching.runner import BatchRunner, Outcome
from keepwarm.batching.stats import BatchStats, account
from keepwarm.errors import DeadlineExceededError, UnavailableError


class Dispatch(Admission):
    """See the module docstring. ``queue`` is the batcher's ``BatchQueue``; ``runner`` runs a
    batch; ``slots`` bounds the batches running at once; ``alone`` (at least ``slots``)
    bounds the requests run at once on their callers' threads while nothing is queued (each
    alone, as unbatched); once a queue builds, batches run on ``slots`` only (runs past it
    give their slot back). ``loose``: ``Batcher.predict``'s callers that run alone without
    the lock (``keepwarm.batching.loose``); their runs count as running here."""

    def __init__(
        self,
        *,
        name: str,
        queue: BatchQueue,
        runner: BatchRunner,
        executor: Executor,
        slots: int,
        alone: int,
        loose: Loose,
        max_queue: int,
        pad_axes: PadAxes,
        latency: LatencyTable,
        stats: BatchStats,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.queue = queue
        self.max_queue = max_queue
        self.pad_axes = pad_axes
        self.latency = latency
        self.stats = stats
        self._runner = runner
        self._executor = executor
        self._slots = slots
        self._alone = max(alone, slots)
        self._loose = loose
        self._clock = clock
        self._lock = threading.Lock()
        self._running = 0
        self._reserved: list[None] = []  # places reserved by requests admitted, not queued
        self.followers = 0  # threads waiting in ``follow`` (written under the lock)
        self._closed = False

    # ---------------------------------------------------------------- requests

    def enqueue(
        self,
        inputs: Arrays,
        deadline: float | None,
        follower: Follower | None,
        *,
        take: bool = True,
        prepare: Callable[[Arrays], object] | None = None,
    ) -> tuple[Future[Arrays], list[Item]]:
        """Register the future (``prepare``: its ``Pending.prepare``), queue the request,
        and (``take``) take a batch when a slot is free (the caller launches it)."""
        found = rows_and_key(inputs, self.pad_axes)
        rows, key = found if found is not None else (0, None)
        future = Pending(prepare)
        now = self._clock()
        item = Item(inputs, rows, key, future, deadline, now, follower)
        if follower is not None:
            future.add_done_callback(follower.done)
        queue, loose = self.queue, self._loose
        with self._lock:
            if self._closed:
                raise UnavailableError(f"model {self.name!r} is unloading; retry")
            if len(queue.items) >= self.max_queue:
                queue.purge(now)
                if len(queue.items) >= self.max_queue:
                    self.stats.rejected += 1
                    raise self._overloaded(len(queue.items))
            if loose.unfolded:  # the queue's choices below read the latency table
                loose.fold(self.stats)
            queue.append(item)
            free = take and self._running + len(loose.runs) < self._slots
            full = free and self._full()
            batch, expired = queue.take(now, others=self._running, full=full) if free else ([], [])
            if batch:
                self._running += 1
        self.expire(expired)
        return future, batch

    def run_now(self, inputs: Arrays, deadline: float | None) -> Outcome | None:
        """The fast path of a thread caller: when a slot is free and nothing is queued, run
        the request here, never queued; None when it must queue. (``Batcher.predict``'s
        first few callers run alone past ``alone``: ``keepwarm.batching.loose``.)"""
        rows = rows_of(inputs)
        now = self._clock()
        queue = self.queue
        pipeline = queue.pipeline
        with self._lock:
            running = self._running
            busy = running + len(self._loose.runs)
            if (
                busy >= self._alone
                or queue.items
                or (busy and not pipeline.alone(busy))
                or self._closed
                or (deadline is not None and deadline <= now)
            ):
                return None
            self._running = running + 1
            pipeline.started(rows)
            queue.rate.arrived(rows or 1, now)
        outcome = self._runner.run_one(inputs, rows)
        with self._lock:
            account(self.stats, self.latency, outcome, 1)
            pipeline.finished(rows)
            if not queue.items or self._running > self._slots:  # the idle case, or
                self._running -= 1  # a run past the batch slots: the others take the queue
                return outcome
            batch, expired = self.next_batch()
            handed = bool(batch) and hand_over(batch)
        self.expire(expired)
        if batch and not handed:
            self._executor.run(partial(self.work, batch))
        return outcome

    @property
    def vacant(self) -> bool:
        """Nothing runs or is queued, and requests are taken (a snapshot, without the lock)."""
        return not (self._running or self._loose.runs or self.queue.items or self._closed)

    @property
    def idle(self) -> bool:
        """Nothing runs or is queued, and lately one request at a time (a snapshot)."""
        return (
            not self._running
            and not self._loose.runs
            and not self.queue.items
            and self.queue.pipeline.seen <= 1
        )

    def fold(self) -> None:
        """Count the runs ``loose`` did (its outcomes kept meanwhile)."""
        with self._lock:
            self._loose.fold(self.stats)

    def follow(self, follower: Follower, until: float | None) -> KeyboardInterrupt | None:
        """Wait until the request's result is in, or lead the batch handed over (run it
        here: ``work``'s result); or, at ``until``, stop waiting (the request stays queued)."""
        with self._lock:
            self.followers += 1
        woken = follower.wait(None if until is None else until - self._clock())
        with self._lock:
            self.followers -= 1
            if not woken and follower.batch is None:
                follower.waiting = False  # no batch will be handed to it now
                return None
        if not woken:
            follower.wait(None)  # handed a batch meanwhile: already woken
        if follower.batch is not None:
            return self.work(follower.batch, inline=True)
        return None

    def launch(self, batch: list[Item]) -> None:
        """Run ``batch`` on a waiting follower in it, else on the executor."""
        handed = False
        if any(item.follower is not None for item in batch):  # none: no lock needed
            with self._lock:
                handed = hand_over(batch)
        if not handed:
            self._executor.run(partial(self.work, batch))

    def expire(self, items: list[Item]) -> None:
        if not items:
            return
        self.stats.expired += len(items)  # a race with a reader costs one count at most
        for item in items:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(
                    DeadlineExceededError(
                        f"model {self.name!r}: the request's deadline passed while it was "
                        "queued; it was not run"
                    )
                )

    def work(self, batch: list[Item], *, inline: bool = False) -> KeyboardInterrupt | None:
        """Run ``batch``, then every batch that gathered meanwhile, on this slot; a
        caller's thread (``inline``) hands those over (a follower, else the executor).
        Returns the ``KeyboardInterrupt`` a batch's model raised, for the caller to raise."""
        interrupt = None
        while batch:
            started = self._clock()
            outcome = self._runner.run([item.inputs for item in batch], [i.rows for i in batch])
            waited = [started - item.queued_at for item in batch]
            with self._lock:
                account(self.stats, self.latency, outcome, len(batch), sum(waited), max(waited))
                self.queue.pipeline.finished(sum(item.rows for item in batch))
                done, (batch, expired) = batch, self.next_batch()
                handed = inline and bool(batch) and hand_over(batch)
            futures = [item.future for item in done]
            if outcome.error is None and len(outcome.results) == len(futures):
                ready(futures, outcome.results)
            outcome.deliver(futures)
            interrupt = interrupt or outcome.interrupt
            self.expire(expired)
            if batch and inline:
                if not handed:
                    self._executor.run(partial(self.work, batch))
                return interrupt
        return interrupt

    def next_batch(self) -> tuple[list[Item], list[Item]]:
        """After a batch (under the lock): the batch this slot runs next and the requests
        whose deadline passed, or, when nothing gathered meanwhile (or this run was past
        the batch slots), the slot given back."""
        if self.queue.items and self._running <= self._slots:
            batch, expired = self.queue.take(
                self._clock(), force=self._closed, others=self._running - 1, full=self._full()
            )
        else:
            batch, expired = [], []
        if not batch:
            self._running -= 1
        return batch, expired

    def fire(self, *, force: bool = True) -> bool:
        """The waker's call: dispatch the held partial batch if a slot is free; without
        ``force``, what is queued, as a new arrival would (held if waiting pays). True:
        a batch was launched and more is queued (a free slot may take it)."""
        launch: list[Item] = []
        expired: list[Item] = []
        handed = False
        with self._lock:
            if self._running + len(self._loose.runs) < self._slots:
                force = force or self._closed  # closing: what is queued runs now
                launch, expired = self.queue.take(
                    self._clock(), force=force, others=self._running, full=self._full()
                )
                if launch:
                    self._running += 1
                    handed = hand_over(launch)
        self.expire(expired)
        if launch and not handed:
            self._executor.run(partial(self.work, launch))
        return bool(launch) and bool(self.queue.items)

    # ------------------------------------------------------------------- status

    def counters(self) -> BatchStats:
        with self._lock:
            self._loose.fold(self.stats)
            return self.stats.copy()

    def close(self) -> None:
        """Take no new requests; run what is queued (now, when a slot is free)."""
        with self._lock:
            self._closed = True
        self.fire()


def ready(futures: list[Future[Arrays]], results: list[Arrays]) -> None:
    """Before a batch's futures are answered: each one's ``Pending.prepare`` (the server's
    answer encoded), here on the batch thread, for the whole batch before any is
    answered, so that the event loop is called once for the batch and only writes."""
    for future, outputs in zip(futures, results, strict=True):
        if isinstance(future, Pending):
            future.ready(outputs)
