"""``bench/overload.py`` and ``bench/overload_metrics.py``: the quantile of a histogram's
growth between two scrapes (the bound's "one batch": the p99 of
``keepwarm_batch_run_seconds`` over the measured span), and the event loop's mean wait
for a core (the kernel's schedstat)."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from overload import _by_quarter, _waits, loop_schedstat
from overload_metrics import _interpolated, parse_metrics

INF = float("inf")


def test_the_quantile_of_the_span_is_interpolated_within_its_bucket() -> None:
    before = {0.1: 50.0, 0.2: 50.0, 0.4: 50.0, INF: 50.0}  # all before the span: left out
    after = {0.1: 60.0, 0.2: 140.0, 0.4: 150.0, INF: 150.0}  # span: 10, 80, 10 (100)
    assert math.isclose(_interpolated(before, after, 0.5), 0.1 + 0.1 * 40 / 80)
    assert math.isclose(_interpolated(before, after, 0.99), 0.2 + 0.2 * 9 / 10)
    assert math.isclose(_interpolated(before, after, 0.05), 0.1 * 5 / 10)


def test_past_the_last_bound_and_an_empty_span() -> None:
    assert _interpolated({}, {0.1: 1.0, 0.2: 1.0, INF: 4.0}, 0.99) == 0.2  # the last bound
    assert math.isnan(_interpolated({0.1: 3.0, INF: 3.0}, {0.1: 3.0, INF: 3.0}, 0.99))


def test_the_loop_wait_is_the_wait_per_run_over_the_span() -> None:
    assert _waits((1_000_000, 10), (3_000_000, 14)) == {"loop_wait_us": 500.0}
    assert math.isnan(_waits((5, 3), (5, 3))["loop_wait_us"])  # never ran in the span


def test_schedstat_counts_this_process_main_thread_runs() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("reads the main thread's figures")
    wait, runs = loop_schedstat(os.getpid())
    if (wait, runs) == (0, 0):
        pytest.skip("this kernel keeps no schedstat")
    time.sleep(0.001)  # blocks: the thread is put on a core again after it
    assert loop_schedstat(os.getpid())[1] > runs


def test_a_scrape_reads_the_named_model_alone() -> None:
    """The MLP warms its largest bucket long before MobileNetV2 beside it: the cell waits
    for its own model's table, and counts its own model's batches."""
    text = "\n".join([
        'keepwarm_batch_seconds{model="mlp",version="1",size="32"} 0.001',
        'keepwarm_batch_seconds{model="mobilenet_v2",version="1",size="16"} 0.2',
        'keepwarm_batch_requests_total{model="mlp",version="1",outcome="run"} 500.0',
        'keepwarm_batch_requests_total{model="mobilenet_v2",version="1",outcome="run"} 7.0',
    ])  # fmt: skip
    mine = parse_metrics(text, "mobilenet_v2")
    assert mine["table"] == {16: 0.2} and mine["run"] == 7.0
    assert parse_metrics(text)["run"] == 507.0
    assert 32 in parse_metrics(text)["table"]  # every model's: the old reading, fooled


def test_slow_refusals_are_counted_by_quarter_second() -> None:
    assert _by_quarter([(0.1, 0.02), (0.2, 0.03), (0.3, 0.02), (1.0, 0.5)]) == {
        0.0: 2,
        0.25: 1,
        1.0: 1,
    }


def test_a_scrape_reads_the_server_refusal_histogram() -> None:
    text = "\n".join([
        'keepwarm_refusal_seconds_bucket{le="0.0001",model="mobilenet_v2"} 90.0',
        'keepwarm_refusal_seconds_bucket{le="0.001",model="mobilenet_v2"} 100.0',
        'keepwarm_refusal_seconds_bucket{le="+Inf",model="mobilenet_v2"} 100.0',
        'keepwarm_refusal_seconds_bucket{le="+Inf",model="mlp"} 5.0',
    ])  # fmt: skip
    found = parse_metrics(text, "mobilenet_v2")["refusals"]
    assert found == {0.0001: 90.0, 0.001: 100.0, INF: 100.0}
    assert _interpolated({}, found, 0.99) == pytest.approx(0.0001 + 0.0009 * 9 / 10)
