"""Batching's Prometheus series, read from the live batchers at each scrape."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from keepwarm.batching.registry import BatcherView
from keepwarm.batching.stats import RUN_SECONDS_BOUNDS

_LE = [*(repr(bound) for bound in RUN_SECONDS_BOUNDS), "+Inf"]

_OUTCOMES = ("rejected", "expired", "cancelled", "failed")


class BatchingCollector(Collector):
    """``keepwarm_batch_*``: per model and version, batches by size, rows (the requests'
    and padding), requests by outcome, time spent queued, queue depth and bound, and a
    histogram of the batches' run times (the model's call, every size)."""

    def __init__(self, batchers: Callable[[], Sequence[BatcherView]]) -> None:
        self._batchers = batchers

    def describe(self) -> list[Metric]:
        return []  # described when collected

    def collect(self) -> list[Metric]:
        labels = ["model", "version"]
        batches = CounterMetricFamily(
            "keepwarm_batches", "Batches run, by size (the bucket the model saw).",
            labels=[*labels, "size"],
        )  # fmt: skip
        rows = CounterMetricFamily(
            "keepwarm_batch_rows", "Rows run in batches: the requests' own, and padding.",
            labels=[*labels, "kind"],
        )  # fmt: skip
        requests = CounterMetricFamily(
            "keepwarm_batch_requests",
            "Requests through the batcher by outcome: run, or rejected (queue full, 503), "
            "expired (deadline passed in the queue, not run), cancelled (the caller went "
            "away before its batch), failed (its batch raised).",
            labels=[*labels, "outcome"],
        )  # fmt: skip
        queued = CounterMetricFamily(
            "keepwarm_batch_queue_seconds", "Seconds requests waited in the queue (sum).",
            labels=labels,
        )  # fmt: skip
        longest = GaugeMetricFamily(
            "keepwarm_batch_queue_seconds_max", "The longest wait in the queue so far.",
            labels=labels,
        )  # fmt: skip
        depth = GaugeMetricFamily(
            "keepwarm_batch_queue_depth", "Requests waiting for a batch now.", labels=labels
        )
        bound = GaugeMetricFamily(
            "keepwarm_batch_queue_limit", "max_queue: past it, requests get 503.", labels=labels
        )
        seconds = GaugeMetricFamily(
            "keepwarm_batch_seconds",
            "Seconds a batch of each size takes: the latency table (measured at load, a "
            "moving average since).",
            labels=[*labels, "size"],
        )
        warm = GaugeMetricFamily(
            "keepwarm_batch_warm_rows",
            "The largest batch formed now: the batch sizes warmed so far (they warm on a "
            "thread after the version serves, smallest first; keepwarm_batch_max_rows once "
            "all are).",
            labels=labels,
        )
        most = GaugeMetricFamily(
            "keepwarm_batch_max_rows", "max_batch_size: the largest batch.", labels=labels
        )
        runs = HistogramMetricFamily(
            "keepwarm_batch_run_seconds",
            "Seconds each batch took in the model, every size (its high quantiles: what a "
            "queued request may wait for the batch ahead of it).",
            labels=labels,
        )
        for view in self._batchers():
            key = [view.model, "" if view.version is None else str(view.version)]
            stats = view.stats
            for size, count in sorted(stats.batch_sizes.items()):
                batches.add_metric([*key, str(size)], count)
            rows.add_metric([*key, "request"], stats.rows)
            rows.add_metric([*key, "padding"], max(0, stats.padded_rows - stats.rows))
            requests.add_metric([*key, "run"], stats.requests)
            for outcome in _OUTCOMES:
                requests.add_metric([*key, outcome], getattr(stats, outcome))
            queued.add_metric(key, stats.queue_seconds_sum)
            longest.add_metric(key, stats.queue_seconds_max)
            depth.add_metric(key, view.queued)
            bound.add_metric(key, view.max_queue)
            for size, value in sorted(view.batch_seconds.items()):
                seconds.add_metric([*key, str(size)], value)
            warm.add_metric(key, view.warm_rows)
            most.add_metric(key, view.max_batch_size)
            runs.add_metric(key, _cumulative(stats.run_counts), stats.run_seconds_sum)
        return [batches, rows, requests, queued, longest, depth, bound, seconds, warm, most, runs]


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts as Prometheus's cumulative ``le`` buckets."""
    total, out = 0, []
    for le, count in zip(_LE, counts, strict=True):
        total += count
        out.append((le, float(total)))
    return out
