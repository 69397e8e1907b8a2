"""Counters of one batcher, for status and for the metrics module to read at scrape time."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


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
