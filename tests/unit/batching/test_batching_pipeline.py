"""Long batches each take about half of the requests in the system, a second beside the
first only once a whole half is queued and the queue is not full
(``keepwarm.batching.pipeline``): the choice alone, a closed loop of clients on the queue
with a fake clock, and the batcher's slots (jobs held by the test's executor)."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pytest

from keepwarm.batching import Batcher, LatencyTable
from keepwarm.batching.batch_queue import BatchQueue, Item
from keepwarm.batching.pipeline import LONG_BATCH_SECONDS, MIN_HALF_ROWS, Pipeline
from keepwarm.batching.stats import BatchStats
from support.batch_models import InlineExecutor, RowModel

# MobileNetV2-like: about the same time per row from 8 rows up, 12.5 ms per row.
LONG = {1: 0.024, 2: 0.034, 4: 0.052, 8: 0.1, 16: 0.2, 32: 0.4}
# MLP-like: a batch takes well under a millisecond.
SHORT = {1: 0.0002, 2: 0.00021, 4: 0.00022, 8: 0.00025, 16: 0.0003, 32: 0.0004}


def _table(seconds: dict[int, float]) -> LatencyTable:
    table = LatencyTable(32)
    for bucket, value in seconds.items():
        table.record(bucket, value)
    return table


def test_long_batches_take_half_of_the_rows_in_the_system() -> None:
    pipeline = Pipeline(_table(LONG))
    assert pipeline.limit(32, 0) == 16
    assert pipeline.on and not pipeline.alone(1) and pipeline.alone(0)
    pipeline.started(16)
    assert pipeline.limit(16, 1) == 16  # a whole half queued: it runs beside the first
    pipeline.started(16)
    assert pipeline.limit(5, 2) == 0  # two halves run: the 5 queued wait for one to end
    pipeline.finished(16)  # its clients are on their way back: still in the system
    assert pipeline.limit(5, 1) == 0  # a part of a half: not beside the running batch
    assert pipeline.limit(16, 1) == 16
    assert pipeline.limit(16, 0) == 16


def test_short_batches_and_small_halves_are_not_bounded() -> None:
    short = Pipeline(_table(SHORT))
    assert short.limit(32, 1) is None and not short.on and short.alone(1)
    few = Pipeline(_table(LONG))
    rows = 2 * MIN_HALF_ROWS - 2  # half of them: a batch that serves a row for more
    assert few.limit(rows, 1) is None and few.alone(1)
    unmeasured = Pipeline(LatencyTable(32))
    assert unmeasured.limit(32, 0) is None
    at_the_bound = Pipeline(_table({b: LONG_BATCH_SECONDS for b in LONG}))
    assert at_the_bound.limit(32, 0) == 16


def test_the_rows_seen_follow_clients_that_leave() -> None:
    pipeline = Pipeline(_table(LONG))
    assert pipeline.limit(32, 0) == 16
    for _ in range(40):  # 8 clients left: each batch taken lowers the count by one row
        pipeline.arrived(8)
        pipeline.limit(8, 0)
        pipeline.started(8)
        pipeline.finished(8)
    assert pipeline.limit(0, 1) is None and pipeline.seen == 8 and pipeline.alone(1)


def test_a_request_that_came_back_counts_once() -> None:
    pipeline = Pipeline(_table(LONG))
    pipeline.started(16)
    pipeline.finished(16)  # answered: 16 clients on their way back
    for _ in range(16):
        pipeline.arrived(1)  # ... and back, queued
    assert pipeline.limit(16, 0) == 8 and pipeline.seen == 16  # not 32: halves of 16


def test_a_trip_back_may_outlast_a_batch_but_not_two() -> None:
    pipeline = Pipeline(_table(LONG))
    pipeline.started(16)
    pipeline.finished(16)  # 16 answered, whose clients then close
    pipeline.started(1)  # the next batch begins: the 16 may still be on their way
    assert pipeline.limit(0, 1) == 0 and pipeline.seen == 17
    for _ in range(30):  # one client left, one row at a time
        pipeline.finished(1)
        pipeline.arrived(1)
        pipeline.limit(1, 0)
        pipeline.started(1)
    assert pipeline.seen <= 2 and not pipeline.on  # the 16 were taken as gone


def test_seeded_figures_never_count_as_long() -> None:
    table = LatencyTable(32)
    for bucket in table.buckets:
        table.seed(bucket, 1.0)  # a first call at each size, at warmup: an upper bound
    assert Pipeline(table).limit(32, 1) is None
    table.record(16, 0.2)  # measured while serving
    assert Pipeline(table).limit(32, 0) == 16


def test_one_size_slowed_once_does_not_count_as_long() -> None:
    fluke = _table({**SHORT, 8: 0.03})  # a batch of 8, rarely run, once preempted
    assert Pipeline(fluke).limit(32, 1) is None
    assert Pipeline(fluke).limit(16, 0) == 8  # halves of 8: its own figure is all there is


def _closed_loop(table: LatencyTable, clients: int, trip: float, batches: int) -> list[int]:
    """``clients`` that each send their next request ``trip`` seconds after their answer,
    on a queue with one slot and batch times from ``table`` (a fake clock): the batch
    sizes, in order; a batch started when nothing was queued is recorded as 0."""
    queue = BatchQueue(
        max_batch_size=32, max_delay=0.005, slots=1, latency=table, stats=BatchStats(),
        arm=lambda _at: None,
    )  # fmt: skip
    arrivals = [(0.0, n) for n in range(clients)]

    def arrive(until: float) -> None:  # the requests sent by ``until``, in order
        arrivals.sort()
        while arrivals and arrivals[0][0] <= until:
            at, client = arrivals.pop(0)
            x = np.full((1, 3), client, np.float32)
            queue.append(Item({"x": x}, 1, ("x",), Future(), None, at))

    now, sizes = 0.0, []
    for _ in range(batches):
        arrive(now)
        if not queue.items:  # the slot idles until the next request comes
            sizes.append(0)
            now = arrivals[0][0]
            continue
        batch, expired = queue.take(now)
        assert batch and not expired
        sizes.append(len(batch))
        now += table.get(max(b for b in table.buckets if b <= len(batch))) or 0.0
        arrive(now)  # while the batch ran
        queue.pipeline.finished(len(batch))
        arrivals += [(now + trip, int(item.inputs["x"][0, 0])) for item in batch]
    return sizes


def test_a_closed_loop_settles_on_halves_and_the_slot_never_idles() -> None:
    sizes = _closed_loop(_table(LONG), clients=32, trip=0.02, batches=30)
    assert sizes[0] == 16  # not all 32: the other half runs while the first comes back
    assert sizes[2:] == [16] * 28


def test_short_batches_take_every_queued_request() -> None:
    sizes = _closed_loop(_table(SHORT), clients=32, trip=0.02, batches=6)
    assert sizes == [32, 0, 32, 0, 32, 0]  # the trip dwarfs the batch: nothing to gain


def _filled(
    seconds: dict[int, float], max_queue: int = 256
) -> tuple[Batcher, RowModel, InlineExecutor]:
    """A batcher with two slots whose jobs the test runs, its table ``seconds``: one
    request on each slot (held), then 30 queued behind them."""
    executor, model = InlineExecutor(slots=2), RowModel()
    batcher = Batcher(
        model.predict, name="m", executor=executor, max_delay_ms=0, max_queue=max_queue,
        latency=_table(seconds),
    )  # fmt: skip
    futures = [batcher.submit({"x": np.full((1, 3), v, np.float32)}) for v in range(32)]
    assert len(executor.jobs) == 2 and batcher.queued == 30
    executor.run_all()
    for value, future in enumerate(futures):
        assert future.result(0)["x_echo"][0, 0] == 2 * value
    return batcher, model, executor


def test_the_batcher_runs_long_batches_by_halves_the_second_beside_the_first() -> None:
    batcher, model, executor = _filled(LONG)
    # The first slot's batch ended with 30 queued and the other slot's batch running:
    # a whole half was queued, so it took 16 beside it (one TensorFlow call leaves part
    # of the cores idle); then the rest (14, padded to 16): with the answered on their
    # way back, the system still holds 32.
    assert model.calls == [1, 16, 1, 16]
    ran = len(model.calls)
    first = batcher.submit({"x": np.ones((1, 3), np.float32)})
    assert len(executor.jobs) == 1  # held: a batch runs
    # A request that arrives now queues for the next batch rather than run alone beside
    # it on the free slot (as it would with short batches).
    late = batcher.start({"x": np.full((1, 3), 7, np.float32)}, follow=False)
    assert not late.done() and batcher.queued == 1
    executor.run_all()
    assert first.result(0)["x_echo"][0, 0] == 2 and late.result(0)["x_echo"][0, 0] == 14
    assert model.calls[ran:] == [1, 1]


def test_a_full_queue_runs_long_batches_one_at_a_time() -> None:
    pipeline = Pipeline(_table(LONG))
    assert pipeline.limit(32, 0, full=True) == 16  # nothing runs: a half, as ever
    pipeline.started(16)
    assert pipeline.limit(16, 1, full=True) == 0  # requests refused: none beside the first
    assert pipeline.limit(16, 1) == 16
    _, model, _ = _filled(LONG, max_queue=30)  # the 30 queued fill the queue
    # The first slot's batch ended beside the other's: it took none; the other took a
    # half, then the rest: one batch at a time.
    assert model.calls == [1, 1, 16, 16]


def test_short_batches_keep_both_slots_and_take_every_queued_request() -> None:
    batcher, model, executor = _filled(SHORT)
    assert model.calls == [1, 32, 1]  # the first slot's next batch took all 30 (padded)
    first = batcher.submit({"x": np.ones((1, 3), np.float32)})
    late = batcher.start({"x": np.full((1, 3), 7, np.float32)}, follow=False)
    assert late.done() and late.result(0)["x_echo"][0, 0] == 14  # ran alone, at once
    executor.run_all()
    assert first.result(0)["x_echo"][0, 0] == 2


@pytest.mark.parametrize("rows", [1, 3])
def test_a_request_of_several_rows_counts_each(rows: int) -> None:
    pipeline = Pipeline(_table(LONG))
    pipeline.started(rows * 10)  # a running batch of 10 requests
    # 20 rows in the system: halves of 8; 60: halves of 30, down to the bucket of 16.
    assert pipeline.limit(rows * 10, 1) == {1: 8, 3: 16}[rows]
