"""The Batcher: dispatch, gathering, shapes, failures, batch sizes and holding; the queue's
limits and deadlines are in ``test_batcher_deadlines.py``, callers' threads in
``test_batcher_threads.py``.

Synchronised with events (a model whose calls are held by a gate), never with sleeps.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from keepwarm.batching import Batcher, BatchSplitError, ThreadExecutor
from support.batch_models import RowModel, run_clients
from support.batch_models import held_batcher as _held
from support.batch_models import x_rows as _x


def test_an_idle_model_runs_a_request_at_once(executor: ThreadExecutor) -> None:
    model = RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=60_000)
    for value in range(3):  # the delay is a minute: waiting would time out
        out = batcher.predict(_x(value), timeout=30)
        assert out["x_echo"].tolist() == [[2 * value] * 3]
    assert model.calls == [1, 1, 1]
    assert batcher.stats().waits == 0


def test_arrivals_gather_while_a_batch_runs_first_come_first_served(
    executor: ThreadExecutor,
) -> None:
    batcher, model, gate = _held(executor, max_batch_size=4, max_delay_ms=0)
    first = batcher.submit(_x(0))
    assert model.entered.wait(10)
    # Rows 2 + 1 + 2: the third request would make 5 rows, so it opens the next batch.
    later = [batcher.submit(_x(1, 2)), batcher.submit(_x(2)), batcher.submit(_x(3, 2))]
    later.append(batcher.submit(_x(4)))
    gate.set()
    results = [f.result(30) for f in [first, *later]]
    # [0], then [1 1 2] padded to 4; request 4 does not jump ahead of 3: [3 3 4] padded.
    assert model.calls == [1, 4, 4]
    for value, result in enumerate(results):
        assert set(result["x_echo"].ravel().tolist()) == {2.0 * value}
    stats = batcher.stats()
    assert stats.batches == 3 and stats.requests == 5 and stats.rows == 7
    assert stats.padded_rows == 9 and stats.batch_sizes == {1: 1, 4: 2}


def test_a_request_past_max_batch_size_runs_alone_unpadded(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_batch_size=2, max_delay_ms=0)
    gate.set()
    out = batcher.predict(_x(5, 7), timeout=30)
    assert out["x_echo"].shape == (7, 3) and model.calls == [7]


def test_requests_run_at_once_are_counted_and_timed_at_their_bucket_only(
    executor: ThreadExecutor,
) -> None:
    """An idle model runs each request on its caller's thread: counted as a batch at its
    bucket, never queued, and timed into the latency table, whose sizes are the buckets
    (they label a metric): a request past ``max_batch_size`` adds no size of its own."""
    model = RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_batch_size=4)
    for rows in (7, 3, 2):  # past the maximum; padded to 4; at its bucket
        assert batcher.predict(_x(rows, rows), timeout=30)["x_echo"].shape == (rows, 3)
    assert model.calls == [7, 4, 2]
    stats = batcher.stats()  # runs alone are timed into the table as they are counted
    assert sorted(batcher.latency.snapshot()) == [2, 4]
    assert (stats.batches, stats.requests, stats.rows, stats.padded_rows) == (3, 3, 12, 13)
    assert stats.batch_sizes == {7: 1, 4: 1, 2: 1}
    assert stats.queue_seconds_sum == stats.queue_seconds_max == 0 and stats.failed == 0


def test_other_shapes_are_not_mixed_in(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_batch_size=8, max_delay_ms=0)
    first = batcher.submit(_x(0))
    assert model.entered.wait(10)
    a = batcher.submit(_x(1))
    b = batcher.submit({"x": np.ones((1, 4), np.float32)})  # another width
    c = batcher.submit({"x": np.ones((1, 3), np.float64)})  # another dtype
    d = batcher.submit(_x(2))
    gate.set()
    for f in (first, a, b, c, d):
        f.result(30)
    assert model.calls == [1, 2, 1, 1]  # a and d together (a is first), then b, then c
    assert b.result()["x_echo"].shape == (1, 4) and c.result()["x_echo"].dtype == np.float64


def test_a_failing_batch_fails_each_of_its_requests_only(executor: ThreadExecutor) -> None:
    calls = []
    gate = threading.Event()
    entered = threading.Event()

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        assert gate.wait(10)
        calls.append(len(inputs["x"]))
        if len(calls) == 2:
            return {"y": inputs["x"][:1]}  # one row for a batch of two
        return {"y": inputs["x"]}

    batcher = Batcher(predict, name="broken", executor=executor, max_delay_ms=0)
    first = batcher.submit(_x(0))
    assert entered.wait(10)
    pair = [batcher.submit(_x(1)), batcher.submit(_x(2))]
    gate.set()
    assert first.result(30)["y"].shape == (1, 3)
    for f in pair:
        with pytest.raises(BatchSplitError, match="model 'broken' returned output 'y'"):
            f.result(30)
    assert batcher.predict(_x(3), timeout=30)["y"][0, 0] == 3  # it keeps serving
    assert batcher.stats().failed == 2


def test_32_threads_at_once_get_their_own_results() -> None:
    executor = ThreadExecutor(2)
    model = RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_batch_size=8)
    results: dict[int, dict[str, np.ndarray]] = {}

    def client(index: int) -> None:
        for round_ in range(5):
            rows = 1 + (index + round_) % 3
            value = index * 10 + round_
            out = batcher.predict(_x(value, rows), timeout=60)
            assert out["x_echo"].shape == (rows, 3)
            assert set(out["x_echo"].ravel().tolist()) == {2.0 * value}
            assert out["x_sum"].tolist() == [3.0 * value] * rows
            results[value] = out

    try:
        run_clients(32, client)
    finally:
        executor.close()
    assert len(results) == 160
    assert max(model.calls) <= 8


def test_waiting_pays_only_under_load_and_never_past_max_delay(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_batch_size=64, max_delay_ms=10_000)
    # A model whose batches cost 10 s up to 32 rows and 10.1 s at 64: a queue of 20 rows,
    # arriving far faster than 2 rows/s, is worth holding for 64.
    for bucket in (1, 2, 4, 8, 16, 32):
        batcher.latency.record(bucket, 10.0)
    batcher.latency.record(64, 10.1)
    first = batcher.submit(_x(0))
    assert model.entered.wait(10)
    burst = [batcher.submit(_x(i)) for i in range(1, 21)]
    gate.set()
    for value, f in enumerate([first, *burst]):
        assert f.result(60)["x_echo"][0, 0] == 2 * value
    assert batcher.stats().waits >= 1  # the 20 rows were held for more
    assert model.calls[0] == 1 and sum(model.calls) >= 21


def test_a_batch_stops_at_the_size_that_serves_a_row_for_least(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_batch_size=8, max_delay_ms=0)
    for bucket, seconds in {1: 0.01, 2: 0.012, 4: 0.014, 8: 0.2}.items():
        batcher.latency.record(bucket, seconds)  # 8 rows cost far more than twice 4
    first = batcher.submit(_x(0))
    assert model.entered.wait(10)
    later = [batcher.submit(_x(i)) for i in range(1, 9)]
    gate.set()
    for value, f in enumerate([first, *later]):
        assert f.result(30)["x_echo"][0, 0] == 2 * value
    assert model.calls == [1, 4, 4]


def test_holding_that_gains_nothing_stops_for_a_while(executor: ThreadExecutor) -> None:
    """Closed-loop callers are all queued already: a held batch gains no rows, so the
    batcher stops holding (it would only add the delay to every batch)."""
    batcher, model, gate = _held(executor, max_batch_size=4, max_delay_ms=50, slots=1)
    for bucket, seconds in {1: 1.0, 2: 1.0, 4: 1.001}.items():
        batcher.latency.record(bucket, seconds)  # 4 rows cost as little as 2: worth holding

    def round_() -> None:
        gate.clear()
        model.entered.clear()
        first = batcher.submit(_x(0))
        assert model.entered.wait(10)
        pair = [batcher.submit(_x(1)), batcher.submit(_x(2))]  # arriving far faster than 2/s
        gate.set()
        for f in [first, *pair]:
            f.result(30)

    began = time.monotonic()
    round_()
    assert batcher.stats().waits == 1  # the pair was held for two more rows; none came
    round_()
    if time.monotonic() - began > 0.1:
        pytest.skip("the machine was too slow to see the pause (0.1 s)")
    assert batcher.stats().waits == 1  # no hold in the pause
    assert model.calls == [1, 2, 1, 2]
