"""How long each batch size takes, how fast requests arrive, and whether waiting pays.

The batcher dispatches at once whenever a slot is free, except when both say so:

- requests arrive faster than the free slots could serve them one small batch at a time
  (``rate > slots * rows / time(bucket(rows))``: a queue is building), and
- a larger bucket serves a row for less, and enough rows to fill it are expected within
  ``max_delay`` (and within half the time of the batch they would join).

When idle or lightly loaded the first condition fails, so no request ever waits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from keepwarm.batching.merge import buckets

_SMOOTHING = 0.2  # weight of a new measurement in the moving averages
#: Every this many times ``best_size`` would cut a batch short on the table's figures, it
#: does not: the larger bucket runs and is measured again (see ``best_size``).
RETRY_EVERY = 8


class LatencyTable:
    """Seconds per batch, per bucket: seeded at warmup, then a moving average.

    Its batcher records under its lock, except for ``predict``'s callers that run alone
    (``keepwarm.batching.loose``): two records at once may lose one figure from the
    moving average, nothing worse (a bucket is seeded by its warmup before any batch runs
    at it); each read is one dict operation, so any thread may read.

    ``cap``: the largest batch the batcher forms now (``Batcher.cap_batches``): the
    largest bucket, except while larger buckets still warm after the version serves.
    """

    def __init__(self, max_batch_size: int) -> None:
        self.buckets = buckets(max_batch_size)
        self._seconds: dict[int, float] = {}
        self._seeded: set[int] = set()
        self.cap = self.buckets[-1]
        self._cuts = 0  # batches ``best_size`` cut short since the last one it did not

    def seed(self, bucket: int, seconds: float) -> None:
        """A bucket's figure from its warmup run: the first call at a batch size pays once
        for it (kernels chosen, memory allocated), so this is an upper bound, and the first
        batch measured at that size replaces it whole. Too high a figure only makes waiting
        for a larger batch look less worthwhile: no request waits because of it."""
        self._seconds[bucket] = seconds
        self._seeded.add(bucket)

    def record(self, bucket: int, seconds: float) -> None:
        old = self._seconds.get(bucket)
        if old is None or bucket in self._seeded:
            self._seeded.discard(bucket)
            self._seconds[bucket] = seconds
        else:
            self._seconds[bucket] = old + _SMOOTHING * (seconds - old)

    def record_many(self, bucket: int, seconds: float, count: int) -> None:
        """``count`` figures whose mean is ``seconds``, as ``record`` of each of them in
        turn would weigh them (the mean in place of each: the order inside is lost)."""
        old = self._seconds.get(bucket)
        if old is None or bucket in self._seeded:
            self._seeded.discard(bucket)
            old = seconds
        self._seconds[bucket] = old + (1.0 - (1.0 - _SMOOTHING) ** count) * (seconds - old)

    def get(self, bucket: int) -> float | None:
        return self._seconds.get(bucket)

    def measured(self, bucket: int) -> float | None:
        """``bucket``'s figure when a batch that ran at it set it (None: unmeasured, or
        only seeded: an upper bound)."""
        return None if bucket in self._seeded else self._seconds.get(bucket)

    def best_size(self, rows: int) -> int:
        """How many of ``rows`` queued rows to run now: the bucket that costs least per
        real row (a bucket past ``rows`` is padded), or ``rows`` when a bucket it would
        consider has not been measured in a batch (a seeded figure is an upper bound:
        trusted here, it would keep its size from ever running, and being measured).

        Every ``RETRY_EVERY``-th batch it would cut is not cut: a figure that a run slowed
        once (its thread pre-empted on a busy machine: 10-50x the usual time, a fifth of
        it kept by the moving average) would otherwise keep its bucket from ever running
        again, hence from being measured again, for good: at 4 clients the MLP's queued
        requests then ran one per batch, each batch handed to a batch thread (7,269
        batches of 1 and 489 of 2 for 8,247 requests, against about one batch of 2 or
        4 per two requests before the figure went up)."""
        best = self._best(rows)
        if best < rows:
            self._cuts += 1
            if self._cuts >= RETRY_EVERY:
                self._cuts = 0
                return rows
        return best

    def _best(self, rows: int) -> int:
        best, best_cost = rows, float("inf")
        for bucket in self.buckets:
            seconds = self._seconds.get(bucket)
            if seconds is None or bucket in self._seeded:
                return rows
            cost = seconds / min(bucket, rows)
            if cost <= best_cost:
                best, best_cost = bucket, cost
            if bucket >= rows:
                break
        return min(best, rows)

    def snapshot(self) -> Mapping[int, float]:
        return dict(self._seconds)


class ArrivalRate:
    """Rows per second, a moving average over the gaps between arrivals."""

    def __init__(self) -> None:
        self._last: float | None = None
        self._gap = math.inf  # seconds per row

    def arrived(self, rows: int, now: float) -> None:
        """``rows`` (at least 1) arrived at ``now``."""
        last, self._last = self._last, now
        if last is None:
            return
        gap = (now - last) / rows
        old = self._gap
        self._gap = gap if old == math.inf else old + _SMOOTHING * (gap - old)

    def rows_per_second(self, now: float) -> float:
        if self._last is None or self._gap <= 0:
            return 0.0 if self._last is None else float("inf")
        # A silence longer than the usual gap counts as a gap already.
        gap = max(self._gap, now - self._last)
        return 1.0 / gap


def wait_seconds(
    rows: int,
    rate: float,
    table: LatencyTable,
    *,
    slots: int,
    max_batch_size: int,
    max_delay: float,
) -> float:
    """How long to hold ``rows`` queued rows for more (0: dispatch now); see the module."""
    if rows >= max_batch_size or max_delay <= 0 or rate <= 0:
        return 0.0
    now_bucket = next(b for b in table.buckets if b >= rows)
    now_time = table.get(now_bucket)
    if now_time is None or now_time <= 0:
        return 0.0
    if rate <= slots * rows / now_time:
        return 0.0  # the free slots keep up: waiting would only add latency
    now_cost = now_time / rows
    for bucket in table.buckets:
        if bucket <= now_bucket:
            continue
        seconds = table.get(bucket)
        if seconds is None or seconds / bucket >= now_cost:
            continue
        wait = (bucket - rows) / rate
        if wait <= max_delay and wait <= seconds / 2:
            return wait
    return 0.0
