"""The Batcher's limits: a full queue refuses at once; a request whose deadline passes, or
whose caller goes away (thread or asyncio), is not run; closing refuses new requests and
runs the queued. Events, no sleeps."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from keepwarm.batching import Batcher, ThreadExecutor
from keepwarm.errors import DeadlineExceededError, UnavailableError
from support.batch_models import RowModel
from support.batch_models import held_batcher as _held
from support.batch_models import x_rows as _x


def test_past_the_queue_bound_requests_are_refused_at_once(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_queue=3, max_delay_ms=0)
    running = batcher.submit(_x(0))
    assert model.entered.wait(10)
    queued = [batcher.submit(_x(i)) for i in range(1, 4)]
    with pytest.raises(UnavailableError, match=r"model 'm' is overloaded: 3 requests"):
        batcher.submit(_x(9))
    assert batcher.stats().rejected == 1
    # A cancelled request frees its place.
    assert queued[0].cancel()
    extra = batcher.submit(_x(8))
    gate.set()
    for f in [running, *queued[1:], extra]:
        f.result(30)
    assert model.calls == [1, 4]  # 2, 3 and 8, padded to 4 rows
    assert np.full(3, 1, np.float32).tobytes() not in model.seen


def test_an_expired_request_is_not_run(executor: ThreadExecutor) -> None:
    now = [100.0]
    gate = threading.Event()
    model = RowModel(gate)
    batcher = Batcher(
        model.predict, name="m", executor=executor, max_delay_ms=0, clock=lambda: now[0]
    )
    running = batcher.submit(_x(0))
    assert model.entered.wait(10)
    late = batcher.submit(_x(7), deadline=105.0)
    kept = batcher.submit(_x(8), deadline=200.0)
    now[0] = 110.0  # the deadline of `late` passes while it is queued
    gate.set()
    running.result(30)
    with pytest.raises(DeadlineExceededError, match="passed while it was queued"):
        late.result(30)
    assert kept.result(30)["x_echo"][0, 0] == 16
    assert model.calls == [1, 1]
    assert np.full(3, 7, np.float32).tobytes() not in model.seen  # counted by the model
    assert batcher.stats().expired == 1


def test_a_cancelled_request_leaves_the_queue_and_a_running_one_finishes(
    executor: ThreadExecutor,
) -> None:
    batcher, model, gate = _held(executor, max_delay_ms=0)
    running = batcher.submit(_x(0))
    assert model.entered.wait(10)
    assert not running.cancel()  # its batch runs: it is not interrupted
    gone = batcher.submit(_x(7))
    assert gone.cancel()
    gate.set()
    assert running.result(30)["x_echo"][0, 0] == 0
    assert model.calls == [1]
    assert np.full(3, 7, np.float32).tobytes() not in model.seen
    batcher.predict(_x(1), timeout=30)  # the cancelled one is purged on the way
    assert batcher.stats().cancelled == 1 and batcher.queued == 0


def test_a_thread_caller_past_its_timeout_gets_deadline_exceeded_and_is_not_run(
    executor: ThreadExecutor,
) -> None:
    batcher, model, gate = _held(executor, max_delay_ms=0, crowd=0)  # past the slot: queued
    running = batcher.submit(_x(0))
    assert model.entered.wait(10)
    with pytest.raises(DeadlineExceededError, match="deadline"):
        batcher.predict(_x(7), timeout=0.01)
    gate.set()
    running.result(30)
    batcher.predict(_x(1), timeout=30)
    assert np.full(3, 7, np.float32).tobytes() not in model.seen
    assert model.calls == [1, 1]


def test_async_callers_cancelled_or_expired_are_not_run(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_delay_ms=0)

    async def scenario() -> None:
        running = asyncio.ensure_future(batcher.predict_async(_x(0)))
        while not model.entered.is_set():  # bounded by the test's timeout
            await asyncio.sleep(0)
        gone = asyncio.ensure_future(batcher.predict_async(_x(7)))
        await asyncio.sleep(0)  # queued
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        with pytest.raises(DeadlineExceededError):
            await batcher.predict_async(_x(6), timeout=0.01)
        gate.set()
        assert (await running)["x_echo"][0, 0] == 0
        assert (await batcher.predict_async(_x(1), timeout=30))["x_echo"][0, 0] == 2

    asyncio.run(scenario())
    for value in (6, 7):
        assert np.full(3, value, np.float32).tobytes() not in model.seen
    assert model.calls == [1, 1]


def test_closing_refuses_new_requests_and_runs_the_queued(executor: ThreadExecutor) -> None:
    batcher, model, gate = _held(executor, max_delay_ms=0)
    running = batcher.submit(_x(0))
    assert model.entered.wait(10)
    queued = batcher.submit(_x(1))
    batcher.close()
    with pytest.raises(UnavailableError, match="unloading"):
        batcher.submit(_x(2))
    gate.set()
    assert running.result(30) and queued.result(30)["x_echo"][0, 0] == 2
