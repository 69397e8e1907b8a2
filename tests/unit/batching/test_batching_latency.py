"""The wait policy, the latency table and the arrival rate; the executor's sizing."""

from __future__ import annotations

import pytest

from keepwarm.batching import LatencyTable, ThreadExecutor, pool_size, threads_per_call
from keepwarm.batching.latency import RETRY_EVERY, ArrivalRate, wait_seconds
from keepwarm.errors import InvalidConfigError


def _table(seconds: dict[int, float], max_batch: int = 32) -> LatencyTable:
    table = LatencyTable(max_batch)
    for bucket, value in seconds.items():
        table.record(bucket, value)
    return table


# Batch time grows slowly with size: larger batches serve a row for much less.
CHEAP_ROWS = {1: 0.010, 2: 0.0105, 4: 0.011, 8: 0.012, 16: 0.014, 32: 0.018}


def _wait(rows: int, rate: float, table: LatencyTable, **kw: float) -> float:
    args = {"slots": 1, "max_batch_size": 32, "max_delay": 0.005} | kw
    return wait_seconds(rows, rate, table, **args)  # type: ignore[arg-type]


def test_no_wait_when_the_free_slots_keep_up() -> None:
    table = _table(CHEAP_ROWS)
    assert _wait(1, 0.0, table) == 0  # idle
    assert _wait(1, 50.0, table) == 0  # 50 rows/s; one row every 10 ms keeps up (100/s)
    assert _wait(1, 150.0, table, slots=2) == 0  # two slots keep up with 150/s


def test_waits_under_load_for_a_bucket_that_serves_rows_for_less() -> None:
    table = _table(CHEAP_ROWS)
    wait = _wait(1, 2000.0, table)  # 2000 rows/s: one at a time cannot keep up
    assert wait == pytest.approx(1 / 2000)  # one more row fills bucket 2
    assert 0 < _wait(3, 2000.0, table) <= 0.005


def test_never_past_max_delay_nor_without_measurements() -> None:
    table = _table(CHEAP_ROWS)
    assert _wait(1, 150.0, table, max_delay=0.001) == 0  # the next row is 6.7 ms away
    assert _wait(1, 2000.0, table, max_delay=0) == 0
    assert _wait(32, 1e6, table) == 0  # full
    assert _wait(1, 2000.0, LatencyTable(32)) == 0  # nothing measured yet


def test_no_wait_when_larger_batches_cost_as_much_per_row() -> None:
    linear = _table({b: 0.001 * b for b in (1, 2, 4, 8, 16, 32)})
    assert _wait(1, 1e5, linear) == 0


def test_best_size_takes_the_bucket_that_serves_a_row_for_least() -> None:
    cheap = _table(CHEAP_ROWS)
    assert [cheap.best_size(n) for n in (1, 2, 3, 16, 32)] == [1, 2, 3, 16, 32]
    assert cheap.best_size(17) == 16  # 16 now and 1 next costs less than 17 padded to 32
    # Batch 32 falls out of the caches: 16 rows at a time serve more.
    cliff = _table({1: 0.013, 2: 0.02, 4: 0.036, 8: 0.076, 16: 0.144, 32: 0.463})
    assert cliff.best_size(32) == 16 and cliff.best_size(20) == 16
    assert cliff.best_size(5) == 4  # 5 rows would be padded to 8 (9.5 ms/row) vs 9 ms
    assert LatencyTable(32).best_size(7) == 7  # nothing measured: all of them
    partial = _table({1: 0.01, 2: 0.011})
    assert partial.best_size(9) == 9  # 4 and 8 unmeasured: no guess


def test_latency_table_is_a_moving_average() -> None:
    table = LatencyTable(8)
    assert table.buckets == (1, 2, 4, 8)
    table.record(4, 1.0)
    table.record(4, 2.0)
    assert table.get(4) == pytest.approx(1.2)
    assert table.snapshot() == {4: pytest.approx(1.2)} and table.get(2) is None


def test_a_seeded_figure_is_replaced_by_the_first_measured_batch() -> None:
    table = LatencyTable(8)
    table.seed(8, 0.9)  # the warmup run, which paid for the first call at its size
    assert table.get(8) == 0.9
    table.record(8, 0.3)  # a batch served: it replaces the seed whole...
    assert table.get(8) == 0.3
    table.record(8, 0.4)  # ...and later ones average as before
    assert table.get(8) == pytest.approx(0.32)


def test_a_seeded_figure_never_shrinks_a_batch_until_that_size_is_measured() -> None:
    """A warmup figure is an upper bound (the first call at its size pays once): trusted
    to cut a batch short, it would keep that size from ever running, hence from being
    measured (a 4-thread MLP ran only batches of 1 that way)."""
    table = LatencyTable(4)
    table.seed(1, 0.001)
    table.seed(2, 0.05)  # the first call at 2 rows, 50x the next ones
    table.record(1, 0.001)
    assert table.best_size(2) == 2  # 2 is not cut to 1 on a seeded figure
    table.record(2, 0.0012)  # measured: replaces the seed
    assert table.best_size(2) == 2
    table.record(2, 0.05)
    table.record(2, 0.05)
    assert table.best_size(2) == 1  # measured slow: now it may cut


def test_arrival_rate_decays_in_silence() -> None:
    rate = ArrivalRate()
    assert rate.rows_per_second(0.0) == 0
    for i in range(10):
        rate.arrived(1, i * 0.001)
    assert rate.rows_per_second(0.009) == pytest.approx(1000)
    assert rate.rows_per_second(1.009) == pytest.approx(1.0)  # a second of silence


def test_pool_size_follows_the_threads_each_call_uses() -> None:
    assert threads_per_call({}, cores=8) == 8
    assert threads_per_call({"intra_op_num_threads": 2}, cores=8) == 2
    assert threads_per_call({"intra_op_num_threads": 2, "inter_op_num_threads": 2}, 8) == 4
    assert threads_per_call({"intra_op_num_threads": 0}, cores=8) == 8
    assert pool_size(8, 2) == 4 and pool_size(8, 8) == 1 and pool_size(2, 0) == 1
    assert pool_size(8, 3) == 2 and pool_size(2, 16) == 1
    with pytest.raises(InvalidConfigError, match="threads"):
        ThreadExecutor(0)


def test_a_bucket_cut_on_its_figure_is_retried_every_few_batches() -> None:
    """A figure a run slowed once (a pre-empted thread) must not keep its bucket from
    ever running again: every ``RETRY_EVERY``-th cut is not made, so the bucket runs and
    its figure is measured again (on the server the MLP's table once held 34 ms for a
    batch of 4 that takes 0.2 ms, and 4 queued requests ran one per batch)."""
    table = _table({1: 0.0002, 2: 0.0003, 4: 0.0004})
    table.record(2, 0.2)  # one run slowed 1000x: the average says 40 ms now
    sizes = [table.best_size(2) for _ in range(3 * RETRY_EVERY)]
    assert sizes.count(2) == 3 and sizes.count(1) == 3 * RETRY_EVERY - 3
    assert sizes[RETRY_EVERY - 1] == 2  # the RETRY_EVERY-th cut is not made
    for _ in range(40):  # each retry measures the bucket: its figure comes back down
        table.record(2, 0.0003)
    assert [table.best_size(2) for _ in range(RETRY_EVERY)] == [2] * RETRY_EVERY


@pytest.mark.parametrize("count", [1, 2, 5, 32])
def test_record_many_weighs_its_mean_as_that_many_records(count: int) -> None:
    """Runs alone are timed into the table in bulk (``Loose.fold``): ``count`` figures of
    one mean move the average as ``count`` records of it would; a seeded figure is
    replaced by the mean, and an unmeasured bucket takes it."""
    one_by_one, bulk = _table({2: 0.01}), _table({2: 0.01})
    for _ in range(count):
        one_by_one.record(2, 0.002)
    bulk.record_many(2, 0.002, count)
    assert bulk.get(2) == pytest.approx(one_by_one.get(2))
    seeded = LatencyTable(4)
    seeded.seed(4, 0.5)
    seeded.record_many(4, 0.003, count)
    seeded.record_many(1, 0.001, count)
    assert seeded.measured(4) == pytest.approx(0.003) and seeded.get(1) == pytest.approx(0.001)
