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

Here the runs under way, and the callers in that do not run alone, are counted in lists
(``append`` and ``pop`` are atomic under the GIL), and each run's time is put in its
bucket's list (or, for the rare run that failed or was not at a bucket, its outcome in
a deque), ``append`` being atomic too, so none is lost; the batcher's counters, arrival
rate, pipeline and latency table take them under its lock ``FOLD_EVERY`` at a time, in
a few calls into C rather than a loop per run, and before anyone reads the counters or
queues a request (``fold``: the queue's choices read the table). These runs count as
running where the batcher asks whether a slot is free, as ``run_now``'s runs do; one
that ends while requests are queued lets a free slot take them (``Dispatch.fire``).
About 110 bytecodes per call on top of batching off's 258 on the MLP (against 260 when
each run was timed into the table at once and folded one by one).

What that Python costs once the model runs between calls is ~10x what it costs warm.
One thread, the MLP, this ``predict`` alternated call by call with the model's own
(15,000 calls each, p50 of a call's wall time): +11 to +16 µs a call, all of it outside
the model's call (timed inside: +2 µs, noise), where the same code back to back on a
model that returns at once costs 1.9 µs: after ~200 µs of TensorFlow the code and the
objects it touches are out of the caches. Split into wrappers of their own: the crowd
gate +3.3 µs, the rows (``values``, ``shape``, ``sizes``) +3.9, the clock reads and the
append +1.2; a gate on one list alone (append, ``len``, pop) +4, a bare wrapper +0.1. So
timing 1 run in 8 (every run still counted: rows in a list of ints) was no faster in the
in-process cell (one process, 10 ms alternated phases, 8 rounds, this against that:
0.994 at 4 threads, 0.972 at 8; each against batching off 0.915 / 0.914 and 0.935 /
0.961, the control 1.024 / 1.016) and was not kept: a check for a crowd on every call
costs this model ~2% alone, before any bookkeeping, and 2-3x that at 4-8 threads.

What did cost: the fold. Split out in one process (the MLP, ``Loose.predict``'s body
copied into variants called with coerced inputs beside the runtime's own ``predict``, 10
ms alternated phases of ``bench/inproc_pairs.measure``, 8 rounds; req/s against the
runtime's, 4 / 8 threads): the whole body 0.91 / 0.90; the gate, rows and clock reads
with the fold replaced by clearing the list 0.985 / 0.978 (again: 0.965 / 1.003); a fold
every 32 with no clock reads 0.953 / 0.931, and 1-2 more context switches per 10 calls.
A fold timed there took 62 µs at the median (p90 89, p99 150): on the caller's thread,
holding the GIL and the batcher's lock, while the other callers come back from
TensorFlow. So ``predict``'s own callers fold every ``PREDICT_FOLD_EVERY`` (256) runs
(the body without the rows, folding at 32 against 256, side by side in one run: 0.977
against 0.993 at 4 threads, 0.950 against 0.993 at 8; through ``keepwarm.load``'s model,
one process, off, on and on folding at 32 alternated, 10 rounds: on/off 0.963 against
0.931 at 4 threads, 0.926 against 0.923 at 8, CPU per call 193 against 200 µs and 204
against 208; this on against that on 1.040 and 1.011); a server
thread's run alone still folds at ``FOLD_EVERY`` (``Batcher.idle`` reads the pipeline's
count unfolded, see ``FOLD_EVERY``). No batch forms in this cell at 4 or 8 threads (the
crowd is 4 per slot, 8 on 2 cores: every call runs alone), so batches past the crowd,
the queued callers' wake-ups and a leader-follower hand-off do not enter it. A frame
more (a bare wrapper around the runtime's ``predict``) measured 0.998 / 1.007 of the
runtime's own: calling its flat call directly, skipping that ``predict`` (a frame and a
try), could save no more than that; not done.

Where the rest goes (session 30, 8 threads): sampled by ``py-spy --gil`` (12 s a side),
this ``predict`` held the GIL in 5.9% of the callers' GIL-held samples, most of them on
``(array,) = inputs.values()`` (18 of 83: a view and its iterator made), the time's
append (11) and the gate (13). Variants of the body in one process
(``bench/inproc_variants.py``, 10-14 rounds, req/s against off, 4 / 8 threads): a bare
frame 0.985-1.015 / 0.95-1.016, the gate alone 0.972-0.983 / 0.936-0.988, with the rows
and clock reads 0.93-0.97 / 0.87-0.98, the whole 0.92-0.98 / 0.91-0.95 (CPU +5 to +10
µs a call, +0.1 to +0.9 context switches); rounds move +-5-10%, so no piece stands out
but the sum. So the rows are read by ``len`` of the input under the name seen last (no
view, no shape tuple), and a run's seconds go to its bucket's list (no tuple a run; the
fold sums each list: 256 runs folded in 7 µs warm, against 33). Tree against tree
(``bench/inproc_pairs.py``, on/off within each tree, 4 runs of 5 rounds a tree,
alternated, load 1.7-4.4; medians of the 20 rounds): at 4 threads 0.936 before, 0.944
now (each half: 0.930 / 0.951, 0.946 / 0.929: no change); at 8, 0.934 before, 0.967 now
(0.933 / 0.964, 0.934 / 0.976); the control off2/off 1.00. The len and bucket lists
without the lookup by name measured no change (0.921 / 0.934 and 0.934 / 0.936 at 4,
0.903 / 0.907 and 0.940 / 0.921 at 8, 22 rounds a tree). Still short of 0.97 at 4.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Protocol

from keepwarm.batching.batch_queue import BatchQueue
from keepwarm.batching.latency import LatencyTable
from keepwarm.batching.merge import Arrays, rows_of
from keepwarm.batching.runner import BatchRunner, Outcome
from keepwarm.batching.stats import RUN_SECONDS_BOUNDS, BatchStats, account


class Predicting(Protocol):
    """``Batcher.predict``'s type."""

    def __call__(self, inputs: Arrays, *, timeout: float | None = None) -> Arrays: ...


#: Runs kept before the one that adds one takes them all into the counters. (128 saved
#: ~0.3 µs a run, a fold costing ~14 µs whatever its size, but the pipeline's count of
#: requests in the system, which ``Batcher.idle`` reads unfolded, then lags further:
#: MLP c8 through the server served 0.86-0.98x with 128 in the 3 quieter of 5 A/B runs.)
FOLD_EVERY = 32
#: Runs kept before a fold when the run that adds one is ``Batcher.predict``'s own caller
#: (a library's thread): nothing reads the pipeline's count unfolded there (only the
#: server's ``Batcher.idle`` does), and every read of the counters or the table folds first.
PREDICT_FOLD_EVERY = 256
#: The histogram's first bound: a fold counts the runs that took at most this (the MLP's
#: alone, ~0.1 ms) at once, and searches the bounds only for the others (~0.5 µs a run).
#: The others alone, not every run of a fold with one of them (``Counter`` over a search
#: each): on a loaded machine a run of 4-8 threads' often takes past 1 ms, and a fold of
#: 32 with 2 such runs went from 19-30 to 6-10 µs (warm, one thread); inside the
#: in-process cell (MLP, 4 threads calling ``Loose.predict``) a fold's CPU went from 98
#: to 59 µs, ~1.2 µs a call: too little to show in the cell's on/off ratio (0.93 and 0.94
#: at 4 threads, 0.99 and 0.96 at 8, this fold and the one before, side by side in one
#: process, 8 rounds; the control off2/off 0.99 and 1.03).
FIRST_BOUND = RUN_SECONDS_BOUNDS[0]
#: ``predict``'s way for a caller that may not run alone now (a queue, the crowd full).
Slow = Callable[[Arrays, "float | None"], Arrays]


class Declined(Exception):
    """``decline``'s: the caller may not run alone now, and nothing was queued for it."""


def decline(inputs: Arrays, timeout: float | None) -> Arrays:
    """A ``slow`` for a caller that queues its request its own way (``Batcher.run_alone``)."""
    raise Declined


class Loose:
    """See the module docstring. ``runs``: runs alone under way (one entry each, put in
    by ``predict`` while the caller runs alone); ``callers``: ``predict`` callers in
    that do not run alone (one entry each, from entry to return); ``slow``: the
    batcher's path for those;
    ``fire``: the batcher's, called after a run when requests are queued; ``fold``: the
    batcher's, calls ``fold`` under its lock."""

    __slots__ = (
        "_at",
        "_clock",
        "_done",
        "_fire",
        "_fold",
        "_latency",
        "_name",
        "_predict",
        "_queue",
        "_runner",
        "_slow",
        "_timed",
        "callers",
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
        slow: Slow,
        clock: Callable[[], float],
        fire: Callable[[], None],
        fold: Callable[[], None],
    ) -> None:
        self._runner = runner
        self._predict = runner.predict
        self._slow = slow  # ``predict``'s callers past the crowd, or with a queue
        self._queue = queue
        self._latency = latency
        self._clock = clock
        self._fire = fire
        self._fold = fold
        self.crowd = crowd
        self.callers: list[None] = []
        self.runs: list[None] = []
        self._name = ""  # a single-input request's input name, the last seen
        # Runs not counted yet: per bucket the seconds of those that ran at it
        # (``_timed``; ``_at``: the buckets a run alone may run at, up to the cap), the
        # outcome of the others (failed, or not at a bucket: ``_done``).
        self._timed: dict[int, list[float]] = {b: [] for b in sorted(runner.buckets)}
        self._at = {b: runs for b, runs in self._timed.items() if b <= latency.cap}
        self._done: deque[Outcome] = deque()

    def predict(
        self, inputs: Arrays, *, timeout: float | None = None, slow: Slow | None = None
    ) -> Arrays:
        """``Batcher.predict``: run one request from a thread, here, alone, while at most
        ``crowd`` callers are in and nothing is queued (its outputs, or its error raised:
        a ``KeyboardInterrupt`` the model raised, again); else ``slow``'s answer (default:
        the batcher's ``slow``; ``decline``: ``Declined`` raised, nothing queued)."""
        runs = self.runs
        runs.append(None)  # atomic: one entry per run alone, until it returns
        if (
            len(runs) + len(self.callers) > self.crowd
            or self._queue.items
            or (timeout is not None and timeout <= 0)
        ):
            runs.pop()
            return (self._slow if slow is None else slow)(inputs, timeout)
        try:
            if len(inputs) == 1:  # the common case: rows_of's, in line
                array = inputs.get(self._name)  # by the name seen last: no view made
                if array is None:
                    ((self._name, array),) = inputs.items()
                rows = len(array) if array.ndim else 0  # no shape tuple made
            else:
                rows = rows_of(inputs)
            timed = self._at.get(rows)  # the common case: at a bucket, and a warm one
            if timed is not None:
                began = perf_counter()
                try:
                    outputs = self._predict(inputs)
                except BaseException as exc:
                    outcome = self._runner.failed(rows, rows, exc)
                else:
                    timed.append(perf_counter() - began)  # into the table at the fold
                    if len(timed) >= FOLD_EVERY and (
                        slow is not None or len(timed) >= PREDICT_FOLD_EVERY
                    ):
                        self._fold()
                    return outputs
            else:
                outcome = self._runner.run_one(inputs, rows)
        finally:
            runs.pop()  # before the queue is read: a request queued meanwhile is seen
            if self._queue.items:  # by this run or by the queue's taking (``enqueue``)
                self._fire()
        self._done.append(outcome)
        self._fold()
        if outcome.error is not None:
            raise outcome.interrupt or outcome.error
        return outcome.results[0]

    def cap(self, rows: int) -> None:
        """Runs alone at their bucket only up to ``rows`` rows (the latency table's cap:
        larger buckets still warm); past it, in pieces (``BatchRunner.run_one``)."""
        self._at = {b: runs for b, runs in self._timed.items() if b <= rows}

    def close(self) -> None:
        """No caller runs alone any more (each goes to ``slow``, which refuses it)."""
        self.crowd = -1

    @property
    def unfolded(self) -> bool:
        """Whether runs wait to be folded (a fold would change the counters or the table)."""
        return bool(self._done) or any(self._timed.values())

    def fold(self, stats: BatchStats) -> None:
        """Under the batcher's lock: count the runs done since the last fold, as
        ``run_now`` counts each of its runs (a batch of one request), and time them into
        the latency table (per bucket, their mean, weighted as that many figures). The
        order of runs at different buckets is not kept: the pipeline is told of the
        last two runs as if those at the largest bucket ran last."""
        done = self._done
        runs = arrived = 0
        last = previous = -1
        counts, sizes, latency = stats.run_counts, stats.batch_sizes, self._latency
        for size, timed in self._timed.items():
            if not timed:
                continue
            taken = timed[:]  # a copy and a cut, each one operation: a run's append between
            del timed[: len(taken)]  # the two lands past the cut, for the next fold
            n = len(taken)
            slow = [s for s in taken if s > FIRST_BOUND]  # few: a small model's runs
            counts[0] += n - len(slow)  # at most the first bound: one count
            for run_seconds in slow:
                counts[bisect_left(RUN_SECONDS_BOUNDS, run_seconds)] += 1
            timed_sum = sum(taken)
            stats.run_seconds_sum += timed_sum
            stats.batches += n
            stats.requests += n
            stats.rows += n * size
            stats.padded_rows += n * size
            latency.record_many(size, timed_sum / n, n)
            sizes[size] = sizes.get(size, 0) + n
            arrived += n * size
            runs += n
            previous, last = (size if n > 1 else last), size
        if not (runs or done):
            return
        while done:  # rare: failed runs, and rows past a bucket (or past the cap)
            ran = done.popleft()
            account(stats, self._latency, ran, 1)
            runs += 1
            previous, last = last, ran.rows
            arrived += ran.rows or 1
        self._queue.pipeline.ran_alone(runs, last, previous)
        self._queue.rate.arrived(arrived, self._clock())  # the rate since the last fold
