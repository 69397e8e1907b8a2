"""The histogram of batch run times (``keepwarm_batch_run_seconds``): every timed batch
that ran is counted at its run time, failed and untimed ones are not, and the collector
renders the counts as Prometheus's cumulative buckets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from keepwarm.batching.latency import LatencyTable
from keepwarm.batching.metrics import BatchingCollector
from keepwarm.batching.registry import BatcherView
from keepwarm.batching.runner import Outcome
from keepwarm.batching.stats import RUN_SECONDS_BOUNDS, BatchStats, account


def _outcome(seconds: float | None, error: Exception | None = None) -> Outcome:
    return Outcome([], 4, 4, 4, error, seconds)


def test_each_timed_batch_is_counted_at_its_run_time() -> None:
    stats, latency = BatchStats(), LatencyTable(8)
    for seconds in (0.0005, 0.001, 0.0011, 0.2, 0.2, 100.0):
        account(stats, latency, _outcome(seconds), 4)
    account(stats, latency, _outcome(None), 4)  # untimed (a request past max_batch_size)
    account(stats, latency, _outcome(0.3, RuntimeError("boom")), 4)  # failed: not a run
    counts = stats.run_counts
    assert sum(counts) == 6 and stats.batches == 7
    assert counts[0] == 2  # at most 1 ms, the bound included
    assert counts[1] == 1  # (1 ms, 1.25 ms]
    at = next(i for i, bound in enumerate(RUN_SECONDS_BOUNDS) if bound >= 0.2)
    assert counts[at] == 2 and RUN_SECONDS_BOUNDS[at - 1] < 0.2
    assert counts[-1] == 1  # past the last bound
    assert abs(stats.run_seconds_sum - 100.4026) < 1e-9
    copied = stats.copy()
    account(stats, latency, _outcome(0.2), 4)
    assert copied.run_counts[at] == 2  # a copy does not move with the batcher


def test_the_collector_renders_cumulative_buckets() -> None:
    stats, latency = BatchStats(), LatencyTable(8)
    for seconds in (0.001, 0.2, 0.2, 100.0):
        account(stats, latency, _outcome(seconds), 4)
    view = BatcherView("m", 3, stats, 0, 8, latency.snapshot())
    registry = CollectorRegistry()
    registry.register(BatchingCollector(lambda: [view]))
    text = generate_latest(registry).decode()
    assert 'keepwarm_batch_run_seconds_bucket{le="0.001",model="m",version="3"} 1.0' in text
    at = next(bound for bound in RUN_SECONDS_BOUNDS if bound >= 0.2)
    below = max(bound for bound in RUN_SECONDS_BOUNDS if bound < 0.2)
    assert f'keepwarm_batch_run_seconds_bucket{{le="{below!r}",model="m",version="3"}} 1.0' in text
    assert f'keepwarm_batch_run_seconds_bucket{{le="{at!r}",model="m",version="3"}} 3.0' in text
    assert 'keepwarm_batch_run_seconds_bucket{le="+Inf",model="m",version="3"} 4.0' in text
    assert 'keepwarm_batch_run_seconds_count{model="m",version="3"} 4.0' in text


def test_the_collector_says_how_far_the_batch_sizes_are_warm() -> None:
    view = BatcherView("m", 3, BatchStats(), 0, 8, {}, None, 4, 32)
    registry = CollectorRegistry()
    registry.register(BatchingCollector(lambda: [view]))
    text = generate_latest(registry).decode()
    assert 'keepwarm_batch_warm_rows{model="m",version="3"} 4.0' in text
    assert 'keepwarm_batch_max_rows{model="m",version="3"} 32.0' in text
