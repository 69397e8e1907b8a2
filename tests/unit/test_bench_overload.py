"""``bench/overload.py``: the quantile of a histogram's growth between two scrapes (the
bound's "one batch": the p99 of ``keepwarm_batch_run_seconds`` over the measured span),
and the event loop's mean wait for a core (the kernel's schedstat)."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from overload import _interpolated, _waits, loop_schedstat

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
