"""Counters of one batcher, for status and for the metrics module to read at scrape time;
``account`` adds a batch that ran."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keepwarm.batching.latency import LatencyTable
    from keepwarm.batching.runner import Outcome


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

    def copy(self) -> BatchStats:
        return replace(self, batch_sizes=dict(self.batch_sizes))


def account(
    stats: BatchStats,
    latency: LatencyTable,
    outcome: Outcome,
    requests: int,
    waited: float = 0.0,
    longest: float = 0.0,
) -> None:
    """Count a batch of ``requests`` that ran, queued ``waited`` seconds in all and
    ``longest`` at most (under the batcher's lock), and time it into ``latency``."""
    if outcome.seconds is not None:
        latency.record(outcome.bucket, outcome.seconds)
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
