"""Requests queued from an event loop (``Batcher.submit_from_loop``) are dispatched by one
kick per loop pass: one callback for all the requests the loop queues before it runs,
which launches a batch on every free slot, as one kick per request did."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

import numpy as np

from keepwarm.batching import Batcher
from support.batch_models import InlineExecutor, RowModel
from support.batch_models import x_rows as _x


def _batcher(slots: int = 2) -> tuple[Batcher, InlineExecutor]:
    executor = InlineExecutor(slots)
    model = RowModel()
    return Batcher(model.predict, name="m", executor=executor, max_batch_size=4), executor


def _kicks(batcher: Batcher) -> int:
    """The kicks waiting in the running loop's ready queue (asyncio's own loop)."""
    ready = asyncio.get_running_loop()._ready  # type: ignore[attr-defined]
    return sum(1 for handle in ready if handle._callback == batcher._kick)


def test_one_kick_for_the_requests_of_one_pass_and_a_batch_per_free_slot() -> None:
    batcher, executor = _batcher(slots=2)

    async def scenario() -> tuple[int, int, list[Future[dict[str, np.ndarray]]]]:
        futures = [batcher.submit_from_loop(_x(value)) for value in range(10)]
        kicks = _kicks(batcher)
        await asyncio.sleep(0)  # the kick runs
        return kicks, len(executor.jobs), futures

    kicks, launched, futures = asyncio.run(scenario())
    assert kicks == 1
    assert launched == 2  # both slots took a batch of 4; 2 requests wait for a slot
    executor.run_all()  # a slot that ends its batch takes the rest
    for value, future in enumerate(futures):
        assert set(future.result(0)["x_echo"].ravel().tolist()) == {2.0 * value}
    assert batcher.stats().batch_sizes == {4: 2, 2: 1}


def test_a_request_queued_after_the_kick_ran_gets_its_own() -> None:
    batcher, executor = _batcher(slots=2)

    async def scenario() -> list[int]:
        seen = []
        for value in range(2):
            batcher.submit_from_loop(_x(value))
            seen.append(_kicks(batcher))
            await asyncio.sleep(0)
            seen.append(len(executor.jobs))
        return seen

    assert asyncio.run(scenario()) == [1, 1, 1, 2]  # each pass: a kick, a batch launched
    assert executor.run_all() == 2


def test_a_kick_lost_with_a_closed_loop_does_not_stall_the_next_loop() -> None:
    """A loop stopped and closed before its kick ran leaves its request queued; the next
    loop's request kicks them both (the lost kick does not count as due)."""
    batcher, executor = _batcher(slots=1)
    first = asyncio.new_event_loop()

    async def queue_and_stop() -> None:
        batcher.submit_from_loop(_x(0))
        first.stop()  # this pass ends the loop: the kick scheduled in it never runs

    task = first.create_task(queue_and_stop())
    first.run_forever()
    assert task.done()
    first.close()
    assert executor.jobs == []

    async def again() -> int:
        batcher.submit_from_loop(_x(1))
        kicks = _kicks(batcher)
        await asyncio.sleep(0)
        return kicks

    assert asyncio.run(again()) == 1
    assert executor.run_all() == 1
    assert batcher.stats().batch_sizes == {2: 1}  # both requests, one batch
