"""Few requests and short batches (``Pipeline.few``): a request runs at once on its
caller's thread beside the batches that run, as unbatched, rather than queue behind them;
long batches, many requests, or a queue keep the batching rules. The batcher's jobs are
held by the test's executor, so the order of calls is the test's."""

from __future__ import annotations

import threading

import numpy as np

from keepwarm.batching import Batcher, LatencyTable
from keepwarm.batching.pipeline import SHORT_BATCH_SECONDS, Pipeline
from support.batch_models import (
    LONG_SECONDS,
    SHORT_SECONDS,
    InlineExecutor,
    RowModel,
    measured_table,
)
from support.batch_models import x_rows as _x
from support.waiting import wait_until

LONG, SHORT, _table = LONG_SECONDS, SHORT_SECONDS, measured_table


def test_few_requests_and_short_batches() -> None:
    short = Pipeline(_table(SHORT))
    assert short.few(4)
    short.seen = 4
    assert short.few(4)
    short.seen = 5  # more in the system than may run side by side: batch them
    assert not short.few(4)
    assert not Pipeline(_table(LONG)).few(4)
    at_the_bound = {b: SHORT_BATCH_SECONDS for b in SHORT}
    assert Pipeline(_table(at_the_bound)).few(4)
    past = {b: 1.01 * SHORT_BATCH_SECONDS for b in SHORT}
    assert not Pipeline(_table(past)).few(4)


def test_a_figure_slowed_once_or_only_seeded_does_not_decide() -> None:
    fluke = Pipeline(_table({**SHORT, 2: 0.05}))  # a batch of 2 preempted once
    assert fluke.few(4)
    seeded = LatencyTable(32)
    for bucket in seeded.buckets:
        seeded.seed(bucket, 0.0001)  # warmup's first calls: not measured while serving
    assert not Pipeline(seeded).few(4)
    assert not Pipeline(LatencyTable(32)).few(4)


def test_long_batches_keep_a_running_half_to_itself() -> None:
    pipeline = Pipeline(_table(LONG))
    assert pipeline.limit(32, 0) == 16 and pipeline.on
    assert not pipeline.few(64)  # halves on: no request runs beside one, however few


def _busy(
    seconds: dict[int, float], held: frozenset[float] = frozenset()
) -> tuple[Batcher, RowModel, InlineExecutor, list[int], threading.Event]:
    """A batcher with two slots, both running a batch held by the test's executor; the
    threads its model ran on, in order; a gate that holds, inside the model, the runs of
    requests whose value is in ``held`` until set."""
    executor, model, threads, gate = InlineExecutor(slots=2), RowModel(), [], threading.Event()

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        threads.append(threading.get_ident())
        if float(inputs["x"][0, 0]) in held:
            assert gate.wait(10), "gate never opened"
        return model.predict(inputs)

    batcher = Batcher(predict, name="m", executor=executor, max_delay_ms=0, latency=_table(seconds))
    running = [batcher.submit(_x(v)) for v in (1, 2)]
    assert len(executor.jobs) == 2 and not any(f.done() for f in running)
    return batcher, model, executor, threads, gate


def test_a_request_runs_at_once_beside_short_batches() -> None:
    batcher, model, executor, threads, _ = _busy(SHORT)
    assert batcher.idle  # a server hands the request to a worker thread, as unbatched
    late = batcher.start(_x(3), follow=False)
    assert late.done() and late.result(0)["x_echo"][0, 0] == 6  # not queued behind them
    assert threads == [threading.get_ident()] and model.calls == [1]
    assert batcher.queued == 0
    executor.run_all()
    assert model.calls == [1, 1, 1] and batcher.stats().requests == 3


def test_up_to_side_requests_run_at_once_then_they_queue() -> None:
    batcher, _, executor, _, gate = _busy(SHORT, held=frozenset({3.0, 4.0}))
    side = [_hold(batcher, 3, running=3), _hold(batcher, 4, running=4)]
    # Four run (two batches and two alone, side by side, twice the slots): a fifth
    # queues, to be batched.
    fifth = batcher.start(_x(5), follow=False)
    assert not fifth.done() and batcher.queued == 1
    gate.set()
    for thread in side:
        thread.join(10)
    executor.run_all()
    assert fifth.result(10)["x_echo"][0, 0] == 10 and batcher.stats().requests == 5


def _hold(batcher: Batcher, value: float, running: int) -> threading.Thread:
    """``batcher.start`` on a thread of its own, its run held inside the model: it runs
    at once (``running`` then run)."""
    thread = threading.Thread(target=batcher.start, args=(_x(value),))
    thread.start()
    assert wait_until(lambda: _running(batcher) == running)
    return thread


def _running(batcher: Batcher) -> int:
    return batcher._dispatch._running


def test_many_requests_queue_to_be_batched() -> None:
    batcher, model, executor, _, _ = _busy(SHORT)
    queued = [batcher.submit(_x(v)) for v in range(3, 9)]  # 6 behind the 2 running
    assert batcher.queued == 6 and not batcher.idle
    executor.run_all()  # each slot's next batch takes what gathered
    assert all(f.done() for f in queued) and batcher.queued == 0
    # The rows in the system were more than may run side by side: a request that comes
    # while both slots run queues to be batched.
    again = [batcher.submit(_x(v)) for v in (1, 2)]
    late = batcher.start(_x(3), follow=False)
    assert not late.done() and batcher.queued == 1 and not batcher.idle
    executor.run_all()
    assert late.result(0)["x_echo"][0, 0] == 6 and all(f.done() for f in again)
    assert batcher.stats().requests == 11  # the 6 queued ran as one batch (8: padded)
    assert model.calls[:2] == [1, 8]


def test_a_request_queues_behind_long_batches() -> None:
    batcher, model, executor, _, _ = _busy(LONG)
    assert not batcher.idle  # the request queues from the event loop, to be batched
    late = batcher.start(_x(3), follow=False)
    assert not late.done() and batcher.queued == 1 and model.calls == []
    executor.run_all()
    assert late.result(0)["x_echo"][0, 0] == 6
