"""Metrics from Manager events and request records; JSON-line logs."""

from __future__ import annotations

import json
import logging

from keepwarm.core.events import Event
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.logs import JsonLines
from keepwarm.metrics import Metrics


def test_load_and_unload_durations_bytes_and_evictions() -> None:
    metrics = Metrics()
    key = ModelId("mlp", 2)
    metrics.on_event(Event("state", key, state=State.LOADING, time=10.0))
    metrics.on_event(Event("state", key, state=State.READY, nbytes=1234, time=12.5))
    text = metrics.render().decode()
    assert 'keepwarm_load_seconds_sum{model="mlp"} 2.5' in text
    assert 'keepwarm_model_bytes{model="mlp",version="2"} 1234.0' in text
    metrics.on_event(Event("state", key, state=State.DRAINING, time=20.0))
    metrics.on_event(Event("state", key, state=State.UNLOADED, time=20.25))
    metrics.on_event(Event("evicted", key, nbytes=1234))
    text = metrics.render().decode()
    assert 'keepwarm_unload_seconds_sum{model="mlp"} 0.25' in text
    assert 'keepwarm_model_bytes{model="mlp"' not in text
    assert 'keepwarm_evictions_total{model="mlp"} 1.0' in text
    assert 'keepwarm_state_transitions_total{model="mlp",state="READY"} 1.0' in text


def test_requests_and_manager_counters() -> None:
    metrics = Metrics()
    counters = {"hits": 3, "misses": 1}
    metrics.watch_counters(lambda: counters)
    metrics.request("mlp", "1", "v2", "OK", 0.002)
    metrics.request("mlp", "1", "v2", "INVALID_ARGUMENT", 0.001)
    counters["hits"] = 4
    text = metrics.render().decode()
    assert 'keepwarm_requests_total{code="OK",model="mlp",protocol="v2",version="1"} 1.0' in text
    assert 'keepwarm_request_seconds_count{model="mlp",protocol="v2",version="1"} 1.0' in text
    assert "keepwarm_cache_hits_total 4.0" in text and "keepwarm_cache_misses_total 1.0" in text
    assert "keepwarm_process_resident_bytes" in text


def test_log_records_are_one_json_line_with_control_characters_escaped() -> None:
    record = logging.LogRecord(
        "keepwarm.http", logging.WARNING, __file__, 1, "bad name %s", ("a\nb\x1b[31m",), None
    )
    line = JsonLines().format(record)
    assert "\n" not in line and "\x1b" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "keepwarm.http"
    assert entry["message"] == "bad name a\nb\x1b[31m"


def test_native_start_up_chatter_is_dropped_and_other_lines_pass() -> None:
    import subprocess
    import sys

    code = (
        "import os\n"
        "from keepwarm.logs import quiet_native_chatter\n"
        "restore = quiet_native_chatter()\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called\\n')\n"
        "os.write(2, b'I0000 00:00:1796151223.483296   18345 port.cc:153] oneDNN\\n')\n"
        "os.write(2, b'E0000 00:00:1796152059.760436   22940 cuda_platform.cc:52] failed "
        "call to cuInit: INTERNAL\\n')\n"
        "os.write(2, b'E0000 00:00:1.5   7 session.cc:9] a real native error\\n')\n"
        "os.write(2, b'loading mlp version 1 ...\\nno newline at the end')\n"
        "restore()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=60)
    assert done.stderr == (
        b"E0000 00:00:1.5   7 session.cc:9] a real native error\n"
        b"loading mlp version 1 ...\nno newline at the end"
    )


def test_request_series_expose_what_prometheus_counters_and_histograms_would() -> None:
    """The request series are counted in plain dicts under one lock: the exposition is
    prometheus_client's own ``Counter`` and ``Histogram`` for the same requests, byte for
    byte (names, help, labels, every bucket, the label sets in the order first seen)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from keepwarm.metrics import _LATENCY_BUCKETS

    reference = CollectorRegistry(auto_describe=True)
    labels = ("model", "version", "protocol")
    counter = Counter("keepwarm_requests", "Inference requests by outcome.",
                      (*labels, "code"), registry=reference)  # fmt: skip
    histogram = Histogram("keepwarm_request_seconds",
                          "Inference request latency (successful requests).", labels,
                          buckets=_LATENCY_BUCKETS, registry=reference)  # fmt: skip
    metrics = Metrics()
    # Edges: below the first bound, on a bound, between, past the last, zero.
    seconds = [0.00005, 0.0001, 0.0003, 0.0025, 2.0, 10.0, 100.0, 0.0]
    requests = [("mlp", "1", "v2", "OK", s) for s in seconds]
    requests += [
        ("mlp", "1", "v2", "UNAVAILABLE", 0.5),
        ("", "", "grpc", "NOT_FOUND", 0.1),
        ("mlp", "2", "tfserving", "OK", 0.004),
        ("mlp", "1", "v2", "OK", 0.0001),
    ]
    for model, version, protocol, code, took in requests:
        metrics.request(model, version, protocol, code, took)
        counter.labels(model, version, protocol, code).inc()
        if code == "OK":
            histogram.labels(model, version, protocol).observe(took)

    def ours(text: str) -> str:
        names = ("keepwarm_request_seconds", "keepwarm_requests_total")
        lines = text.splitlines(keepends=True)
        return "".join(line for line in lines if any(name in line for name in names))

    assert ours(metrics.render([]).decode()) == ours(generate_latest(reference).decode())
    assert (
        'keepwarm_request_seconds_bucket{le="0.0001",model="mlp",protocol="v2",version="1"} 4.0'
        in (metrics.render([]).decode())
    )


def test_request_series_are_exact_under_threads() -> None:
    """Requests recorded from several threads at once are all counted (one lock)."""
    import threading

    metrics = Metrics()

    def record() -> None:
        for _ in range(2000):
            metrics.request("mlp", "1", "grpc", "OK", 0.001)

    threads = [threading.Thread(target=record) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = metrics.render([]).decode()
    assert (
        'keepwarm_requests_total{code="OK",model="mlp",protocol="grpc",version="1"} 8000.0' in text
    )
    assert 'keepwarm_request_seconds_count{model="mlp",protocol="grpc",version="1"} 8000.0' in text
    assert 'keepwarm_request_seconds_sum{model="mlp",protocol="grpc",version="1"} 8.0' in text
