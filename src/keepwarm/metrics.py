"""Every server metric, defined once, in a registry of its own (one per server, so tests
that build several servers do not collide). Request metrics are recorded by the
``InferenceService``; load, unload, eviction and cache metrics come from the Manager's
events; memory figures are read when ``/metrics`` is scraped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from keepwarm.core.events import Event
from keepwarm.core.ids import ModelId
from keepwarm.metrics_requests import RequestSeries
from keepwarm.process_memory import ProcessMemory, process_memory

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
#: A refusal's own time is tens of microseconds; its target is 10 ms at p99 (issue 9).
_REFUSAL_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
)  # fmt: skip
_LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    """The server's metrics; ``render()`` is the body of ``GET /metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # No ``*_created`` series: a timestamp per label set is noise here.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry = CollectorRegistry(auto_describe=True)
        # keepwarm_requests_total, keepwarm_request_seconds: counted per request
        self.requests = RequestSeries(_LATENCY_BUCKETS)
        registry.register(self.requests)
        self.in_flight = Gauge(
            "keepwarm_requests_in_flight", "Inference requests received and not yet answered.",
            registry=registry,
        )  # fmt: skip
        self.refusals = Histogram(
            "keepwarm_refusal_seconds",
            "Seconds from an HTTP request's headers parsed to its 503 for a full batching "
            "queue (decided before its body is read); the event loop's lateness in reaching "
            "the request's bytes comes before it.",
            ("model",), buckets=_REFUSAL_BUCKETS, registry=registry,
        )  # fmt: skip
        self.load_seconds = Histogram(
            "keepwarm_load_seconds", "Time from LOADING to READY or FAILED.", ("model",),
            buckets=_LOAD_BUCKETS, registry=registry,
        )  # fmt: skip
        self.unload_seconds = Histogram(
            "keepwarm_unload_seconds", "Time from DRAINING to UNLOADED.", ("model",),
            buckets=_LOAD_BUCKETS, registry=registry,
        )  # fmt: skip
        self.transitions = Counter(
            "keepwarm_state_transitions", "Version state transitions.", ("model", "state"),
            registry=registry,
        )  # fmt: skip
        self.evictions = Counter(
            "keepwarm_evictions", "Versions evicted to make room in the memory budget.",
            ("model",), registry=registry,
        )  # fmt: skip
        self.model_bytes = Gauge(
            "keepwarm_model_bytes", "Bytes held by each loaded version.", ("model", "version"),
            registry=registry,
        )  # fmt: skip
        self.process_memory = Gauge(
            "keepwarm_process_resident_bytes", "Resident memory of the server process.",
            registry=registry,
        )  # fmt: skip
        from keepwarm.batching.metrics import BatchingCollector
        from keepwarm.batching.registry import live_batchers

        registry.register(BatchingCollector(live_batchers))  # keepwarm_batch_*
        from keepwarm.workers.metrics import WorkerCollector
        from keepwarm.workers.pool import default_pool

        registry.register(WorkerCollector(default_pool().counts))  # keepwarm_worker_*
        self._started: dict[tuple[Any, str], float] = {}
        self._memory: Callable[[], int] | None = None
        # One process of several (``keepwarm.server_child``): what turns this process's
        # exposition into the whole server's; None in a server of one process.
        self.merge: Callable[[bytes], Awaitable[bytes]] | None = None

    def watch_counters(self, counters: Callable[[], Mapping[str, int]]) -> None:
        """Export the manager's request counters (``hits``: served by a loaded model,
        ``misses``: by a load) as ``keepwarm_cache_<name>_total``, read at each scrape."""
        self.registry.register(_CountersCollector(counters))

    def request(self, model: str, version: str, protocol: str, code: str, seconds: float) -> None:
        """One inference request that ended with ``code`` after ``seconds``."""
        self.requests.record(model, version, protocol, code, seconds)

    def refused(self, model: str, seconds: float) -> None:
        """A request for ``model`` refused (queue full) ``seconds`` after its headers."""
        self.refusals.labels(model).observe(seconds)

    def on_event(self, event: Event) -> None:
        """A Manager event subscriber: load/unload durations, transitions, cache counts."""
        key = event.key
        model = key.name if isinstance(key, ModelId) else str(key)
        version = str(key.version) if isinstance(key, ModelId) else ""
        if event.kind == "evicted":
            self.evictions.labels(model).inc()
            return
        if event.kind != "state" or event.state is None:
            return
        state = event.state.value
        self.transitions.labels(model, state).inc()
        if state in ("LOADING", "DRAINING"):
            self._started[(key, state)] = event.time
        elif state in ("READY", "FAILED"):
            started = self._started.pop((key, "LOADING"), None)
            if started is not None:
                self.load_seconds.labels(model).observe(event.time - started)
            if state == "READY" and event.nbytes is not None:
                self.model_bytes.labels(model, version).set(event.nbytes)
        elif state == "UNLOADED":
            started = self._started.pop((key, "DRAINING"), None)
            if started is not None:
                self.unload_seconds.labels(model).observe(event.time - started)
            with contextlib.suppress(KeyError):  # never READY: no figure to remove
                self.model_bytes.remove(model, version)

    def render(self, memory: Sequence[ProcessMemory] | None = None) -> bytes:
        """``memory``: the rows of ``keepwarm_process_pss_*`` (``process_memory()``), read
        beforehand off the event loop (``/metrics`` does: reading a process's smaps takes
        tens of ms, during which the loop would answer nothing); read here when None."""
        self.process_memory.set(_resident_bytes())
        rows = process_memory() if memory is None else memory
        extra = CollectorRegistry(auto_describe=False)
        extra.register(_ProcessMemoryCollector(lambda: rows))  # keepwarm_process_pss_*
        return generate_latest(self.registry) + generate_latest(extra)

    async def render_off_loop(self) -> bytes:
        """``render`` with each process's smaps read on a thread: tens of ms that the
        event loop keeps serving meanwhile."""
        memory = await asyncio.get_running_loop().run_in_executor(None, process_memory)
        return self.render(memory)


class _CountersCollector(Collector):
    def __init__(self, counters: Callable[[], Mapping[str, int]]) -> None:
        self._counters = counters

    def describe(self) -> list[Metric]:
        return []  # described when collected: the names come from the manager

    def collect(self) -> list[Metric]:
        out: list[Metric] = []
        for name, value in sorted(dict(self._counters()).items()):
            family = CounterMetricFamily(
                f"keepwarm_cache_{name}", f"Requests counted by the model manager as {name}."
            )
            family.add_metric([], value)
            out.append(family)
        return out


class _ProcessMemoryCollector(Collector):
    """Per process of the server (``"server"``, or a worker's id): PSS and the bytes
    unloading did not give back (``keepwarm.process_memory``), read at each scrape."""

    def __init__(self, processes: Callable[[], Sequence[ProcessMemory]]) -> None:
        self._processes = processes

    def describe(self) -> list[Metric]:
        return []  # described when collected

    def collect(self) -> list[Metric]:
        pss = GaugeMetricFamily(
            "keepwarm_process_pss_bytes",
            "Proportional set size of each process of the server (shared pages divided "
            "among the processes that map them: the sum is what they hold together).",
            labels=["process"],
        )
        kept = GaugeMetricFamily(
            "keepwarm_process_unreclaimed_bytes",
            "Bytes unloading did not give back in each process, past what its first "
            "unload left (the frameworks imported).",
            labels=["process"],
        )
        for row in self._processes():
            if row.pss_bytes is not None:
                pss.add_metric([row.process], row.pss_bytes)
            kept.add_metric([row.process], row.unreclaimed_bytes)
        return [pss, kept]


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return pages * os.sysconf("SC_PAGE_SIZE")
