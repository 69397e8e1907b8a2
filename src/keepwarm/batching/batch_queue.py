"""The requests of one batcher waiting for a batch, and the choice of the next batch.

``take`` drops cancelled requests and returns those whose deadline passed (for the
batcher to fail outside its lock); then the head and the queued requests of its shape
that fit beside it, first come first served, up to ``max_batch_size`` rows (fewer when
the latency table says a smaller batch serves a row for less; about half of the requests
in the system, one batch at a time, when batches take long: ``pipeline``). A partial
batch is held (``arm`` is called with the instant to try again) only when the latency
table says waiting pays, never past ``max_delay``; when a held batch gained no rows,
holding stops for a while, doubling each time it happens again.

Not thread-safe: the batcher calls every method under its lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass

from keepwarm.batching.latency import ArrivalRate, LatencyTable, wait_seconds
from keepwarm.batching.merge import Arrays
from keepwarm.batching.pipeline import Pipeline
from keepwarm.batching.relay import Follower
from keepwarm.batching.stats import BatchStats

FIRST_PENALTY = 0.1  # seconds without holding batches after a hold that gained nothing
MAX_PENALTY = 5.0


@dataclass(slots=True, eq=False)
class Item:
    """One queued request."""

    inputs: Arrays
    rows: int  # 0: cannot be batched, runs alone
    key: Hashable
    future: Future[Arrays]
    deadline: float | None
    queued_at: float
    follower: Follower | None = None  # its caller's thread, waiting (``relay``)


class BatchQueue:
    """See the module docstring. ``items``: the queue, oldest first (others read only
    its length); ``stats``: the batcher's counters (cancelled, expired, waits are
    counted here); ``arm(at)``: try again at ``at`` (a held batch)."""

    def __init__(
        self,
        *,
        max_batch_size: int,
        max_delay: float,
        slots: int,
        latency: LatencyTable,
        stats: BatchStats,
        arm: Callable[[float], None],
    ) -> None:
        self.items: deque[Item] = deque()
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.slots = slots
        self.latency = latency
        self.stats = stats
        self.arm = arm
        self.rate = ArrivalRate()
        self.pipeline = Pipeline(latency)
        self._held_rows = 0  # rows of the batch being held for more (0: none held)
        self._no_wait_until = 0.0  # holding paid nothing lately: not before this
        self._penalty = FIRST_PENALTY

    def append(self, item: Item) -> None:
        self.items.append(item)
        self.rate.arrived(max(item.rows, 1), item.queued_at)
        self.pipeline.arrived(item.rows)

    def purge(self, now: float) -> None:
        """Drop cancelled requests (the queue is rebuilt only when some are)."""
        dropped = [item for item in self.items if item.future.cancelled()]
        if dropped:
            for item in dropped:
                self._count_dropped(item, now)
            gone = {id(item) for item in dropped}  # one cancelled since is dropped later
            self.items = deque(item for item in self.items if id(item) not in gone)

    def _count_dropped(self, item: Item, now: float) -> None:
        """A request cancelled in the queue: past its deadline (its caller gave up on it,
        as an event loop's timeout does) it counts as expired, else as cancelled."""
        if late(item, now):
            self.stats.expired += 1
        else:
            self.stats.cancelled += 1

    def take(
        self, now: float, *, force: bool = False, others: int = 0, full: bool = False
    ) -> tuple[list[Item], list[Item]]:
        """The next batch (possibly empty: nothing queued, or waiting pays; never held
        with ``force``), and requests whose deadline passed (to fail outside the lock).
        ``others``: batches running now besides the one this would be; ``full``: the
        queue refuses requests (``pipeline``: when batches take long, a batch takes about
        half of the requests in the system, after any hold, and one runs beside another
        only when a whole half is queued and the queue is not full)."""
        expired: list[Item] = []
        queue = self.items
        while True:
            while queue and (queue[0].future.cancelled() or late(queue[0], now)):
                head = queue.popleft()
                if head.future.cancelled():
                    self._count_dropped(head, now)
                else:
                    expired.append(head)
            if not queue:
                return [], expired
            bound = self.pipeline.limit(sum(item.rows for item in queue), others, full=full)
            if bound == 0:
                return [], expired
            batch = self._gather(now)
            total = sum(item.rows for item in batch)
            if (
                not force
                and batch[0].rows
                and total < self.max_batch_size
                and now >= self._no_wait_until
            ):
                wait = wait_seconds(
                    total,
                    self.rate.rows_per_second(now),
                    self.latency,
                    slots=self.slots,
                    max_batch_size=self.max_batch_size,
                    max_delay=self.max_delay,
                )
                if wait > 0:
                    if not self._held_rows:
                        self._held_rows = total
                        self.stats.waits += 1
                    self.arm(now + wait)
                    return [], expired
            if self._held_rows:
                self._judge_wait(total, now)
            if bound is not None and total > bound:
                batch = self._gather(now, bound)
            chosen = {id(item) for item in batch}
            if len(chosen) == len(queue) or all(id(queue[i]) in chosen for i in range(len(chosen))):
                for _ in range(len(chosen)):
                    queue.popleft()
            else:
                self.items = queue = deque(i for i in queue if id(i) not in chosen)
            # From here a request can no longer be cancelled: its batch will run.
            running = [item for item in batch if item.future.set_running_or_notify_cancel()]
            self.stats.cancelled += len(batch) - len(running)
            if running:
                self.pipeline.started(sum(item.rows for item in running))
                return running, expired

    def _judge_wait(self, rows: int, now: float) -> None:
        """After a held batch: when no rows joined it (its callers were all there already,
        as closed-loop clients are), stop holding batches for a while, doubling each time
        it happens again."""
        if rows > self._held_rows:
            self._penalty = FIRST_PENALTY
        else:
            self._no_wait_until = now + self._penalty
            self._penalty = min(2 * self._penalty, MAX_PENALTY)
        self._held_rows = 0

    def _gather(self, now: float, bound: int | None = None) -> list[Item]:
        """The head, and the queued requests of its shape that fit beside it, in order, up
        to ``bound`` rows (None: ``max_batch_size``)."""
        head = self.items[0]
        batch = [head]
        limit = min(self.max_batch_size, self.latency.cap)  # no batch past a bucket not warm
        if bound is not None:
            limit = min(limit, bound)
        if head.key is None or head.rows >= limit:
            return batch
        total = head.rows
        for index in range(1, len(self.items)):
            item = self.items[index]
            if item.key != head.key or item.future.cancelled() or late(item, now):
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


def late(item: Item, now: float) -> bool:
    return item.deadline is not None and item.deadline <= now
