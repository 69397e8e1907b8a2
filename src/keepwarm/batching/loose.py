"""``Batcher.predict``'s callers that run alone, without the batcher's lock.

While at most ``crowd`` ``predict`` callers are in and nothing is queued, each request
runs at once on its caller's thread, alone, as without batching, even past the batcher's
``alone``: the batch it would queue for could hold only a few requests, and a queued
request costs its thread a sleep and a wake-up (measured on the MLP, 2 cores: batches
of 1-3 cost more CPU per request than the same calls run side by side, batches of 5 and
more less; with no crowd at all, 4 threads calling the MLP formed batches of 1-2 for 3x
the CPU per request of batching off, 6.7 context switches per request against 1.7);
past ``crowd``, batches of ``crowd / slots`` requests and more form.

Such a run needs none of the queue's bookkeeping. Through ``Dispatch.run_now`` it took
the batcher's lock twice and went through the queue's counters: ~2 µs per request on
its own, more once the callers' threads (running the model side by side: the runtime
gives the GIL up) met at the lock; the MLP served 0.75-0.92x the calls of batching off
at 4 and 8 threads. Here it costs ~0.8 µs.

Here the callers in and the runs under way are counted in lists (``append`` and ``pop``
are atomic under the GIL), and each run's outcome is put in a deque (``append`` and
``popleft`` are atomic too, so none is lost); the batcher's counters, arrival rate and
pipeline take them under its lock ``FOLD_EVERY`` at a time, and before anyone reads the
counters (``fold``). A run's time goes into the latency table at once, without the lock
(the queue's choices read it; two runs' figures at once may lose one of the two from the
moving average, which is no worse than one figure fewer). These runs count as running
where the batcher asks whether a slot is free, as ``run_now``'s runs do; one that ends
while requests are queued lets a free slot take them (``Dispatch.fire``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from time import perf_counter

from keepwarm.batching.batch_queue import BatchQueue
from keepwarm.batching.latency import LatencyTable
from keepwarm.batching.merge import Arrays, rows_of
from keepwarm.batching.runner import BatchRunner, Outcome
from keepwarm.batching.stats import RUN_SECONDS_BOUNDS, BatchStats, account

#: Runs kept before the one that adds one takes them all into the counters.
FOLD_EVERY = 32


class Loose:
    """See the module docstring. ``callers``: ``predict`` callers in (one entry each,
    from entry to return, whatever their request became); ``runs``: runs under way;
    ``fire``: the batcher's, called after a run when requests are queued; ``fold``: the
    batcher's, calls ``fold`` under its lock."""

    __slots__ = (
        "_clock",
        "_done",
        "_fire",
        "_fold",
        "_latency",
        "_queue",
        "_runner",
        "callers",
        "closed",
        "crowd",
        "runs",
    )

    def __init__(
        self,
        runner: BatchRunner,
        queue: BatchQueue,
        latency: LatencyTable,
        *,
        crowd: int,
        clock: Callable[[], float],
        fire: Callable[[], None],
        fold: Callable[[], None],
    ) -> None:
        self._runner = runner
        self._queue = queue
        self._latency = latency
        self._clock = clock
        self._fire = fire
        self._fold = fold
        self.closed = False  # the batcher takes no new requests
        self.crowd = crowd
        self.callers: list[None] = []
        self.runs: list[None] = []
        # Runs not counted yet: (rows, seconds) of one at its bucket, else its outcome.
        self._done: deque[tuple[int, float] | Outcome] = deque()

    def run(self, inputs: Arrays) -> Arrays:
        """Run one request here, alone (the caller checked the crowd and the queue): its
        outputs, or its error raised (a ``KeyboardInterrupt`` the model raised, again)."""
        runner = self._runner
        rows = rows_of(inputs)
        runs = self.runs
        runs.append(None)
        try:
            if rows in runner.buckets and rows <= self._latency.cap:  # the common case
                began = perf_counter()
                try:
                    outputs = runner.predict(inputs)
                except BaseException as exc:
                    outcome = runner.failed(rows, rows, exc)
                else:
                    seconds = perf_counter() - began
                    self._latency.record(rows, seconds)  # see the module docstring
                    done = self._done
                    done.append((rows, seconds))
                    if len(done) >= FOLD_EVERY:
                        self._fold()
                    return outputs
            else:
                outcome = runner.run_one(inputs, rows)
                if outcome.seconds is not None:
                    self._latency.record(outcome.bucket, outcome.seconds)
        finally:
            runs.pop()  # before the queue is read: a request queued meanwhile is seen
            if self._queue.items:  # by this run or by the queue's taking (``enqueue``)
                self._fire()
        self._done.append(outcome)
        self._fold()
        if outcome.error is not None:
            raise outcome.interrupt or outcome.error
        return outcome.results[0]

    def fold(self, stats: BatchStats) -> None:
        """Under the batcher's lock: count the runs done since the last fold, as
        ``run_now`` counts each of its runs (a batch of one request)."""
        done = self._done
        if not done:
            return
        counts, sizes, bounds = stats.run_counts, stats.batch_sizes, RUN_SECONDS_BOUNDS
        runs = count = total = arrived = 0
        timed = 0.0
        rows = previous = -1  # the rows of the last two runs (-1: none)
        while done:
            ran = done.popleft()
            runs += 1
            previous = rows
            if ran.__class__ is tuple:
                rows, seconds = ran
                counts[bisect_left(bounds, seconds)] += 1
                timed += seconds
                sizes[rows] = sizes.get(rows, 0) + 1
                count += 1
                total += rows
            else:
                assert isinstance(ran, Outcome)
                account(stats, None, ran, 1)  # timed into the latency table by ``run``
                rows = ran.rows
            arrived += rows or 1
        stats.run_seconds_sum += timed
        stats.batches += count
        stats.requests += count
        stats.rows += total
        stats.padded_rows += total
        self._queue.pipeline.ran_alone(runs, rows, previous)
        self._queue.rate.arrived(arrived, self._clock())  # the rate since the last fold
