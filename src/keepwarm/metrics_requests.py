"""The inference request series, ``keepwarm_requests_total`` (by outcome) and
``keepwarm_request_seconds`` (a histogram of successful requests' latency): counted per
request under one lock, in plain dicts, and turned into metric families when scraped.

Every request records both; ``prometheus_client``'s ``Counter`` and ``Histogram`` would
take three locks for it (the counter's, the histogram's sum's and its bucket's), and look
the bucket up bound by bound. The exposition is the same: the same names, help, labels
and buckets, in the order the label sets were first seen.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LABELS = ("model", "version", "protocol")
Counted = dict[tuple[str, str, str, str], int]
Timed = dict[tuple[str, str, str], list[float]]


class RequestSeries(Collector):
    """See the module docstring. ``bounds``: the histogram's upper bounds, ascending
    (the ``+Inf`` bucket is added)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(float(b) for b in bounds)
        self._les = [floatToGoString(b) for b in self._bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self._counts: Counted = {}
        # Per (model, version, protocol): the count in each bucket (one per bound, then
        # the overflow), then the sum of the seconds.
        self._timed: Timed = {}

    def record(self, model: str, version: str, protocol: str, code: str, seconds: float) -> None:
        """One request that ended with ``code``; timed when it is ``"OK"``."""
        key = (model, version, protocol, code)
        with self._lock:
            counts = self._counts
            counts[key] = counts.get(key, 0) + 1
            if code != "OK":
                return
            row = self._timed.get(key[:3])
            if row is None:
                row = self._timed[key[:3]] = [0] * (len(self._bounds) + 1) + [0.0]
            row[bisect_left(self._bounds, seconds)] += 1
            row[-1] += seconds

    def describe(self) -> list[Metric]:
        return self._families({}, {})

    def collect(self) -> list[Metric]:
        with self._lock:
            counts = dict(self._counts)
            timed = {key: list(row) for key, row in self._timed.items()}
        return self._families(counts, timed)

    def _families(self, counts: Counted, timed: Timed) -> list[Metric]:
        requests = CounterMetricFamily(
            "keepwarm_requests", "Inference requests by outcome.", labels=[*LABELS, "code"]
        )
        for labels, value in counts.items():
            requests.add_metric(list(labels), float(value))
        latency = HistogramMetricFamily(
            "keepwarm_request_seconds",
            "Inference request latency (successful requests).",
            labels=list(LABELS),
        )
        for key, row in timed.items():
            buckets, total = [], 0.0
            for le, count in zip(self._les, row[:-1], strict=True):
                total += count
                buckets.append((le, total))
            latency.add_metric(list(key), buckets, row[-1])
        return [requests, latency]
