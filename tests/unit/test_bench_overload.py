"""``bench/overload.py``: the quantile of a histogram's growth between two scrapes (the
bound's "one batch": the p99 of ``keepwarm_batch_run_seconds`` over the measured span)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from overload import _interpolated

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
