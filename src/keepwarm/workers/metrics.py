"""Worker processes' Prometheus series, read from the process's pool at each scrape."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


class WorkerCollector(Collector):
    """``keepwarm_worker_restarts_total`` and ``keepwarm_worker_recycles_total``, per
    model: worker processes started again after one died, and replaced on purpose."""

    def __init__(self, counts: Callable[[], Mapping[str, Mapping[str, int]]]) -> None:
        self._counts = counts

    def describe(self) -> list[Metric]:
        return []  # described when collected

    def collect(self) -> list[Metric]:
        restarts = CounterMetricFamily(
            "keepwarm_worker_restarts",
            "Worker processes started again after one died (its models loaded again).",
            labels=["model"],
        )
        recycles = CounterMetricFamily(
            "keepwarm_worker_recycles",
            "Worker processes replaced on purpose (the new one loaded first, no request lost).",
            labels=["model"],
        )
        for model, counts in sorted(self._counts().items()):
            restarts.add_metric([model], counts.get("restarts", 0))
            recycles.add_metric([model], counts.get("recycles", 0))
        return [restarts, recycles]
