"""``/metrics`` of a server of several processes (``server.processes``): every process's
exposition merged into one that describes the whole server.

Counters and histograms are summed over the processes (requests, loads, batches: what
the server did); gauges are kept per process, labelled ``server_process`` (a process's
memory, its loaded versions' bytes, its requests in flight: summing them is left to the
query, which knows what it means). Three series describe the merge itself:
``keepwarm_server_processes`` (how many the server runs), ``keepwarm_server_processes_reporting``
(how many answered this scrape: a process restarting is missing from the sums) and
``keepwarm_server_process_requests_total`` (the inference requests each process answered).
A process that is restarted starts its counts again from zero, so a sum can go down once
then (Prometheus's ``rate()`` reads that as a counter reset).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

SUMMED = frozenset({"counter", "histogram", "summary"})
PROCESS_LABEL = "server_process"
_REQUESTS = "keepwarm_requests_total"


def merge_expositions(expositions: Mapping[int, bytes], processes: int) -> bytes:
    """One exposition from ``expositions`` (process index -> its ``/metrics`` text) of a
    server of ``processes`` processes (see the module docstring)."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    answered: dict[int, float] = {}
    for index, text in sorted(expositions.items()):
        answered[index] = 0.0
        for family in text_string_to_metric_families(text.decode()):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type
                )
            if family.type in SUMMED:
                table = sums.setdefault(family.name, {})
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    table[key] = table.get(key, 0.0) + sample.value
                    if sample.name == _REQUESTS:
                        answered[index] += sample.value
            else:
                for sample in family.samples:
                    labels = {**sample.labels, PROCESS_LABEL: str(index)}
                    merged.add_sample(sample.name, labels, sample.value)
    for name, table in sums.items():
        for (sample_name, pairs), value in table.items():
            families[name].add_sample(sample_name, dict(pairs), value)
    families.update(_about(answered, processes))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


def _about(answered: Mapping[int, float], processes: int) -> dict[str, Metric]:
    count = GaugeMetricFamily(
        "keepwarm_server_processes", "Server processes sharing the ports (server.processes)."
    )
    count.add_metric([], processes)
    reporting = GaugeMetricFamily(
        "keepwarm_server_processes_reporting",
        "Server processes whose figures this scrape includes (one restarting is missing).",
    )
    reporting.add_metric([], len(answered))
    requests = CounterMetricFamily(
        "keepwarm_server_process_requests",
        "Inference requests answered by each server process.",
        labels=[PROCESS_LABEL],
    )
    for index, value in sorted(answered.items()):
        requests.add_metric([str(index)], value)
    return {m.name: m for m in (count, reporting, requests)}


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


__all__ = ["PROCESS_LABEL", "merge_expositions"]
