"""``Batcher.submit_from_loop``: the requests an event loop queues in one pass are
dispatched by one call after them, not one per request, on every free slot that takes a
batch. The executor holds each batch until the test runs it (no thread, no sleep)."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Any

import numpy as np

from keepwarm.batching import Batcher
from support.batch_models import InlineExecutor, RowModel
from support.batch_models import x_rows as _x


def _counted(batcher: Batcher) -> list[bool]:
    """The calls of ``batcher``'s dispatch ``fire`` (each one's answer), counted."""
    dispatch = batcher._dispatch
    fire = dispatch.fire
    answers: list[bool] = []

    def counting(*, force: bool = True) -> bool:
        answers.append(fire(force=force))
        return answers[-1]

    dispatch.fire = counting  # type: ignore[method-assign]
    return answers


def _queued_in_one_pass(batcher: Batcher, requests: list[dict[str, np.ndarray]]) -> list[Any]:
    async def scenario() -> list[Future[Any]]:
        futures = [batcher.submit_from_loop(inputs) for inputs in requests]
        await asyncio.sleep(0)  # the loop's pass after them
        return futures

    return asyncio.run(scenario())


def test_requests_queued_in_one_pass_are_dispatched_by_one_call() -> None:
    executor, model = InlineExecutor(slots=2), RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0)
    fired = _counted(batcher)
    futures = _queued_in_one_pass(batcher, [_x(value) for value in range(4)])
    assert fired == [False]  # one call, which took all four (nothing left queued)
    assert executor.run_all() == 1 and model.calls == [4]
    for value, future in enumerate(futures):
        assert future.result(0)["x_echo"].tolist() == [[2.0 * value] * 3]


def test_a_second_shape_queued_in_the_pass_takes_the_other_free_slot() -> None:
    executor, model = InlineExecutor(slots=2), RowModel()
    batcher = Batcher(model.predict, name="m", executor=executor, max_delay_ms=0)
    wide = [{"x": np.full((1, 5), value, np.float32)} for value in (10.0, 11.0)]
    futures = _queued_in_one_pass(batcher, [_x(0), wide[0], _x(1), wide[1]])
    assert len(executor.jobs) == 2  # both batches left in that pass, one per slot
    assert executor.run_all() == 2 and model.calls == [2, 2]
    assert [f.result(0)["x_echo"][0, 0] for f in futures] == [0.0, 20.0, 2.0, 22.0]
