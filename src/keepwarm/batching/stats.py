"""Counters of one batcher, for status and for the metrics module to read at scrape time;
``account`` adds a batch that ran."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keepwarm.batching.latency import LatencyTable
    from keepwarm.batching.runner import Outcome


#: Upper bounds (seconds) of the histogram of batch run times: 1 ms to about 15 s, each
#: 1.25x the last (a quantile read from it is within 25% of the true one, before
#: interpolation); past the last, the overflow bucket.
RUN_SECONDS_BOUNDS: tuple[float, ...] = tuple(round(0.001 * 1.25**i, 6) for i in range(44))


@dataclass
class BatchStats:
    """Totals since the batcher started. ``batch_sizes``: bucket -> batches run at it;
    ``rows``: request rows run (``padded_rows`` adds the padding); queue delays in seconds."""

    batches: int = 0
    rows: int = 0
    padded_rows: int = 0
    requests: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    queue_seconds_sum: float = 0.0
    queue_seconds_max: float = 0.0
    rejected: int = 0  # queue full: UnavailableError, nothing queued
    expired: int = 0  # deadline passed in the queue: DeadlineExceededError, not run
    cancelled: int = 0  # the caller went away before the request was batched: not run
    failed: int = 0  # requests whose batch raised
    waits: int = 0  # times the batcher held a partial batch because waiting paid
    #: Timed batches that ran, by run time: ``run_counts[i]`` ran in at most
    #: ``RUN_SECONDS_BOUNDS[i]`` (and more than the bound before); the last, past them all.
    run_counts: list[int] = field(default_factory=lambda: [0] * (len(RUN_SECONDS_BOUNDS) + 1))
    run_seconds_sum: float = 0.0

    def copy(self) -> BatchStats:
        return replace(self, batch_sizes=dict(self.batch_sizes), run_counts=list(self.run_counts))


def account(
    stats: BatchStats,
    latency: LatencyTable | None,
    outcome: Outcome,
    requests: int,
    waited: float = 0.0,
    longest: float = 0.0,
) -> None:
    """Count a batch of ``requests`` that ran, queued ``waited`` seconds in all and
    ``longest`` at most (under the batcher's lock), and time it into ``latency`` (None:
    timed into it already)."""
    seconds = outcome.seconds
    if seconds is not None and latency is not None:
        latency.record(outcome.bucket, seconds)
    if outcome.error is not None:
        stats.failed += requests
        return
    if seconds is not None:
        stats.run_counts[bisect_left(RUN_SECONDS_BOUNDS, seconds)] += 1
        stats.run_seconds_sum += seconds
    stats.batches += 1
    stats.requests += requests
    stats.rows += outcome.rows
    stats.padded_rows += outcome.padded
    stats.batch_sizes[outcome.bucket] = stats.batch_sizes.get(outcome.bucket, 0) + 1
    if waited:
        stats.queue_seconds_sum += waited
        stats.queue_seconds_max = max(stats.queue_seconds_max, longest)
