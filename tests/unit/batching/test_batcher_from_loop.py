"""``Batcher.submit_from_loop``: the loop only queues; after its pass, one batch thread is
called for what it queued while none is called already, and that thread takes the batch
itself when it runs (``LoopFeed.gather``), so that the requests queued meanwhile join it.
The executor holds each job until the test runs it (no thread, no sleep)."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest

from keepwarm.batching import Batcher
from keepwarm.errors import DeadlineExceededError
from support.batch_models import InlineExecutor, RowModel
from support.batch_models import x_rows as _x


def _queued(batcher: Batcher, requests: list[dict[str, np.ndarray]]) -> list[Any]:
    async def scenario() -> list[Future[Any]]:
        futures = [batcher.submit_from_loop(inputs) for inputs in requests]
        await asyncio.sleep(0)  # the loop's pass after them: the thread is called
        return futures

    return asyncio.run(scenario())


def test_requests_queued_before_the_batch_thread_runs_join_its_batch() -> None:
    executor, model = InlineExecutor(slots=2), RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0)
    futures = _queued(batcher, [_x(value) for value in range(4)])
    assert len(executor.jobs) == 1  # one batch thread called, for all four
    assert batcher.queued == 4  # the loop took no batch: the thread does
    assert executor.run_all() == 1 and model.calls == [4]
    for value, future in enumerate(futures):
        assert future.result(0)["x_echo"].tolist() == [[2.0 * value] * 3]


def test_a_request_queued_after_the_call_began_calls_again() -> None:
    executor, model = InlineExecutor(slots=2), RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0)
    first = _queued(batcher, [_x(0)])
    job, _ = executor.jobs.pop(0)
    job()  # the thread took and ran its batch: the next arrival calls one again
    second = _queued(batcher, [_x(1), _x(2)])
    assert len(executor.jobs) == 1 and model.calls == [1]
    assert executor.run_all() == 1 and model.calls == [1, 2]
    assert [f.result(0)["x_echo"][0, 0] for f in first + second] == [0.0, 2.0, 4.0]


def test_a_second_shape_left_queued_takes_the_other_free_slot() -> None:
    executor, model = InlineExecutor(slots=2), RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0)
    wide = [{"x": np.full((1, 5), value, np.float32)} for value in (10.0, 11.0)]
    futures = _queued(batcher, [_x(0), wide[0], _x(1), wide[1]])
    assert len(executor.jobs) == 1
    called: list[int] = []  # the jobs waiting at each model call
    predict = model.predict

    def counting(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        called.append(len(executor.jobs))
        return predict(inputs)

    batcher._dispatch._runner.predict = counting  # type: ignore[attr-defined]
    job, _ = executor.jobs.pop(0)
    job()  # took the first shape's batch, and called a thread for the other first
    assert called[0] == 1 and model.calls[0] == 2
    executor.run_all()
    assert model.calls == [2, 2]
    assert [f.result(0)["x_echo"][0, 0] for f in futures] == [0.0, 20.0, 2.0, 22.0]


def test_no_thread_is_called_while_every_slot_is_taken() -> None:
    executor, model = InlineExecutor(slots=1), RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0, slots=1)
    futures = _queued(batcher, [_x(0)])
    job, _ = executor.jobs.pop(0)
    more = _queued(batcher, [_x(1), _x(2)])  # the one slot is the called thread's
    assert executor.jobs == [] and batcher.queued == 3
    job()  # its batch, then the batch gathered meanwhile, on that one thread
    assert model.calls == [4]  # one batch of the three rows (padded to the bucket of 4)
    assert [f.result(0)["x_echo"][0, 0] for f in futures + more] == [0.0, 2.0, 4.0]


def test_a_cancelled_request_leaves_before_the_thread_takes_the_batch() -> None:
    executor, model = InlineExecutor(slots=2), RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0)
    futures = _queued(batcher, [_x(0), _x(1), _x(2)])
    assert futures[1].cancel()
    assert executor.run_all() == 1 and model.calls == [2]
    assert [futures[0].result(0)["x_echo"][0, 0], futures[2].result(0)["x_echo"][0, 0]] == [
        0.0,
        4.0,
    ]
    assert batcher.stats().cancelled == 1


class _Refusing(InlineExecutor):
    """Refuses its first job (as a closed pool does), then holds them as usual."""

    def __init__(self) -> None:
        super().__init__(slots=2)
        self.refused = 0

    def run(self, job: Any) -> None:
        if not self.refused:
            self.refused += 1
            raise RuntimeError("cannot schedule new futures after shutdown")
        super().run(job)


def test_a_request_no_thread_could_be_called_for_stays_queued_for_the_next_call() -> None:
    executor, model = _Refusing(), RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0)
    first = _queued(batcher, [_x(0)])  # the call refused: logged, the slot given back
    assert executor.refused == 1 and executor.jobs == [] and batcher.queued == 1
    second = _queued(batcher, [_x(1)])  # called again: the thread takes both
    assert executor.run_all() == 1 and model.calls == [2]
    assert [f.result(0)["x_echo"][0, 0] for f in first + second] == [0.0, 2.0]


def test_a_request_whose_deadline_passed_before_the_thread_ran_fails_unrun() -> None:
    now = [100.0]
    executor, model = InlineExecutor(slots=2), RowModel()
    batcher = Batcher(
        model.predict, name="m", executor=executor, max_delay_ms=0, clock=lambda: now[0]
    )

    async def scenario() -> list[Future[Any]]:
        late = batcher.submit_from_loop(_x(0), deadline=100.5)
        return [late, batcher.submit_from_loop(_x(1), deadline=200.0)]

    late, kept = asyncio.run(scenario())
    now[0] = 101.0  # the first one's deadline passes before the thread takes the batch
    assert executor.run_all() == 1 and model.calls == [1]
    with pytest.raises(DeadlineExceededError):
        late.result(0)
    assert kept.result(0)["x_echo"][0, 0] == 2.0
    assert batcher.stats().expired == 1
