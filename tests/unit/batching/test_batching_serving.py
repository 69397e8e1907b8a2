"""The server's side of batching (``batching.serving``) and overload refusal, on a
``BatchedModel`` leased as the server leases it; events, not sleeps."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import numpy as np
import pytest

from keepwarm.batching.model import BatchedModel
from keepwarm.batching.registry import admit, live_batchers, refuse_when_full
from keepwarm.batching.serving import (
    Queued,
    admit_request,
    admitted,
    begin,
    finish,
    gathering,
    submit,
)
from keepwarm.errors import DeadlineExceededError, UnavailableError
from keepwarm.model import LeasedModel
from support.batch_models import RowLoaded, held_rows


@pytest.fixture
def held() -> Iterator[tuple[BatchedModel, RowLoaded, threading.Event]]:
    with held_rows(max_batch_size=4, max_queue=2) as (model, (inner, gate)):
        yield model, inner, gate


def _x(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 3), value, np.float32)}


class Lease:
    """Stands for the repository's lease: counts its releases."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()


def _queue(
    model: BatchedModel, value: float, deadline: float | None = None
) -> tuple[Queued, Lease]:
    """``value`` begun under a counted lease while a batch runs: queued, holding the lease
    (the worker thread's own stack, closed here, no longer does)."""
    stack = ExitStack()
    lease = stack.enter_context(Lease())
    queued = begin(LeasedModel(model, "rows", 3), _x(value), deadline, stack)
    assert isinstance(queued, Queued) and (queued.name, queued.version) == ("rows", 3)
    stack.close()
    return queued, lease


def test_an_idle_model_answers_on_the_callers_thread(held: tuple) -> None:
    model, _, gate = held
    gate.set()
    with ExitStack() as stack:
        lease = stack.enter_context(Lease())
        outputs = begin(LeasedModel(model, "rows", 3), _x(2), None, stack)
        assert not isinstance(outputs, Queued)
        assert outputs["x_echo"].tolist() == [[4, 4, 4]]
        assert not lease.released.is_set()  # still the caller's to release
    assert lease.released.is_set()


def test_an_idle_models_request_runs_without_the_batchers_lock(held: tuple) -> None:
    """Nothing runs or is queued: a worker thread's request runs at once, alone, without
    taking the batcher's lock (``Batcher.run_alone``; through ``run_now`` it took it
    twice), and is counted as a batch of its size once the counters are read."""
    model, _, gate = held
    gate.set()
    results: list[object] = []

    def work() -> None:
        with ExitStack() as stack:
            results.append(begin(LeasedModel(model, "rows", 3), _x(3), None, stack))

    with model.batcher._dispatch._lock:  # a scrape of the counters, say
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(10)
        assert not thread.is_alive()
    assert len(results) == 1 and not isinstance(results[0], Queued)
    assert results[0]["x_echo"].tolist() == [[6, 6, 6]]  # type: ignore[index]
    assert model.stats().batch_sizes == {1: 1} and model.batcher.idle


def test_requests_decoded_on_the_loop_queue_there_only_while_their_model_is_busy(
    held: tuple,
) -> None:
    """An idle batcher's request goes the way of an unbatched one (a worker thread, where
    it runs at once); while a batch runs or requests queue, it is queued from the loop."""
    model, inner, gate = held
    leased = LeasedModel(model, "rows", 3)
    assert not gathering(leased)
    running = model.batcher.submit(_x(0))
    assert inner.rows.entered.wait(10)
    assert gathering(leased)  # a batch runs
    gate.set()
    running.result(30)
    assert not gathering(leased)
    stack = ExitStack()
    begun = begin(leased, _x(4), None, stack)  # idle: run here, never queued
    assert not isinstance(begun, Queued) and begun["x_echo"].tolist() == [[8, 8, 8]]
    assert model.stats().waits == 0 and model.batcher.idle


def test_a_queued_request_keeps_its_lease_until_its_batch_ends(held: tuple) -> None:
    model, inner, gate = held
    running = model.batcher.submit(_x(0))
    assert inner.rows.entered.wait(10)

    async def scenario() -> None:
        queued, lease = _queue(model, 5)
        assert not lease.released.is_set()
        task = asyncio.ensure_future(finish(queued))
        await asyncio.sleep(0)
        gate.set()
        outputs = await task
        assert outputs["x_echo"].tolist() == [[10, 10, 10]]
        assert lease.released.is_set()

    asyncio.run(scenario())
    running.result(30)


def test_deadline_or_client_gone_take_the_request_out_unrun(held: tuple) -> None:
    model, inner, gate = held
    running = model.batcher.submit(_x(0))
    assert inner.rows.entered.wait(10)
    gone = asyncio.Event()

    async def scenario() -> None:
        leases = []
        for value, when in ((7, time.monotonic() + 0.01), (8, None)):
            queued, lease = _queue(model, value, when)
            leases.append(lease)
            if value == 7:
                with pytest.raises(DeadlineExceededError, match="deadline passed"):
                    await finish(queued)
            else:
                task = asyncio.ensure_future(finish(queued, gone.wait))
                await asyncio.sleep(0)
                gone.set()
                with pytest.raises(UnavailableError, match="client went away"):
                    await task
        assert all(lease.released.is_set() for lease in leases)  # not in a batch: let go

    asyncio.run(scenario())
    gate.set()
    running.result(30)
    model.predict(_x(1))
    ran = set(inner.rows.seen)
    assert np.full(3, 7, np.float32).tobytes() not in ran
    assert np.full(3, 8, np.float32).tobytes() not in ran
    stats = model.stats()
    assert (stats.expired, stats.cancelled) == (1, 1)


def test_a_cancelled_waiter_takes_the_request_out_unrun(held: tuple) -> None:
    """gRPC ends a call whose client cancelled (or whose deadline passed) by cancelling
    the handler's task: the request it queued leaves the queue, its lease let go."""
    model, inner, gate = held
    running = model.batcher.submit(_x(0))
    assert inner.rows.entered.wait(10)

    async def scenario() -> None:
        queued, lease = _queue(model, 9)
        task = asyncio.ensure_future(finish(queued))
        await asyncio.sleep(0)  # the task now waits for the batch
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)  # the cancellation reaches the request's future
        assert queued.future.cancelled()
        assert lease.released.is_set()

    asyncio.run(scenario())
    gate.set()
    running.result(30)
    model.predict(_x(1))
    assert np.full(3, 9, np.float32).tobytes() not in set(inner.rows.seen)
    assert model.stats().cancelled == 1


def test_a_full_queue_is_refused_before_any_work(held: tuple) -> None:
    model, inner, gate = held
    refuse_when_full("rows")  # empty: nothing to refuse
    running = model.batcher.submit(_x(0))
    assert inner.rows.entered.wait(10)
    queued = [model.batcher.submit(_x(i)) for i in (1, 2)]
    with pytest.raises(UnavailableError, match="'rows' is overloaded: 2 requests"):
        refuse_when_full("rows")
    refuse_when_full("other")  # another model's queue is not this one's
    assert queued[0].cancel()
    refuse_when_full("rows")  # a cancelled request freed its place
    view = next(v for v in live_batchers() if v.model == "rows")
    assert (view.version, view.max_queue, view.stats.rejected) == (3, 2, 1)
    gate.set()
    running.result(30)
    queued[1].result(30)


def test_a_refusal_waits_for_no_batch_thread(held: tuple) -> None:
    """A full queue is refused without the batcher's lock (a batch thread holding it, on
    a busy machine, would hold the refusal back a switch interval or more): with the lock
    held elsewhere, refusals and admissions are answered at once and counted; only a
    queue holding a cancelled request takes the lock, to purge it."""
    model, inner, gate = held
    running = model.batcher.submit(_x(0))
    assert inner.rows.entered.wait(10)
    queued = [model.batcher.submit(_x(i)) for i in (1, 2)]
    answered: list[str] = []

    def refuse_twice() -> None:
        for refuse in (lambda: refuse_when_full("rows"), lambda: admit("rows")):
            try:
                refuse()
            except UnavailableError as exc:
                answered.append(str(exc))

    with model.batcher._dispatch._lock:  # as a batch thread taking its next batch
        refusing = threading.Thread(target=refuse_twice)
        refusing.start()
        refusing.join(10)
        assert not refusing.is_alive(), "a refusal waited for the batcher's lock"
    assert len(answered) == 2 and all("overloaded: 2 requests" in a for a in answered)
    assert model.batcher.stats().rejected == 2
    assert queued[0].cancel()
    place = admit("rows")  # the cancelled request was purged: a place freed
    assert place is not None
    place.release()
    gate.set()
    running.result(30)
    queued[1].result(30)


def test_a_queue_changed_while_a_refusal_reads_it_is_read_again_under_the_lock(
    held: tuple,
) -> None:
    """The refusal's copy of the queue, made without the lock, fails when the queue
    changes meanwhile: the queue is then read under the lock, and the answer stays right."""
    model, inner, gate = held
    running = model.batcher.submit(_x(0))
    assert inner.rows.entered.wait(10)
    queued = [model.batcher.submit(_x(i)) for i in (1, 2)]
    queue = model.batcher._dispatch.queue

    class Changing(deque):  # type: ignore[type-arg]
        copies = 0

        def __iter__(self) -> Iterator[Any]:
            Changing.copies += 1
            if Changing.copies == 1:
                raise RuntimeError("deque mutated during iteration")
            return super().__iter__()

    queue.items = Changing(queue.items)
    assert model.batcher.full  # read again under the lock: still full
    with pytest.raises(UnavailableError):
        admit("rows")
    gate.set()
    running.result(30)
    for future in queued:
        future.result(30)


def test_admitted_requests_hold_their_place_until_queued_or_their_task_ends(
    held: tuple,
) -> None:
    """A server admits a request before reading its body: the place is reserved, so that
    requests admitted and still being read count toward ``max_queue`` (2 here); it is
    given back once the request is queued (``admitted``, then release) or, for one that
    failed before, when its task ends. A place is given back once however often."""
    model, inner, gate = held
    running = model.batcher.submit(_x(0))
    assert inner.rows.entered.wait(10)
    first = admit("rows")
    assert first is not None and admit("other") is None  # "other" is not batched
    second = admit("rows")
    assert second is not None
    with pytest.raises(UnavailableError, match="'rows' is overloaded: 2 requests"):
        admit("rows")
    first.release()
    first.release()  # once only: one place came back, not two
    third = admit("rows")
    assert third is not None
    with pytest.raises(UnavailableError):
        admit("rows")
    second.release()
    third.release()

    async def request(fail: bool) -> None:
        admit_request("rows")  # as a transport does before reading the body
        if fail:
            raise ValueError("a bad body")
        admission = admitted("rows")  # as ``InferenceService.infer`` does
        assert admission is not None and model.batcher.full is False
        admission.release()  # queued now: counted in the queue instead
        model.batcher.submit(_x(4))

    async def scenario() -> None:
        with pytest.raises(ValueError, match="a bad body"):
            await asyncio.ensure_future(request(fail=True))
        await asyncio.ensure_future(request(fail=False))

    asyncio.run(scenario())
    assert model.batcher.queued == 1 and not model.batcher.full  # both places came back
    gate.set()
    running.result(30)


def test_requests_queued_in_one_loop_pass_form_one_batch(held: tuple) -> None:
    """From an event loop, each request is queued at once and the batch is dispatched
    after the loop's due callbacks: two requests queued in one pass (``max_queue`` is
    2), with the model's one slot free, run as one batch of 2 (not two batches of 1)."""
    model, inner, gate = held
    gate.set()

    async def scenario() -> list[list[list[float]]]:
        queued = []
        for value in range(2):
            stack = ExitStack()
            stack.enter_context(Lease())
            queued.append(submit(LeasedModel(model, "rows", 3), _x(value), None, stack))
        outputs = await asyncio.gather(*(finish(q) for q in queued))
        return [o["x_echo"].tolist() for o in outputs]

    assert asyncio.run(scenario()) == [[[2 * v] * 3] for v in range(2)]
    assert inner.rows.calls == [2]


def test_a_place_taken_by_admitted_is_the_callers_to_give_back(held: tuple) -> None:
    """Once ``admitted`` hands the place over, its caller gives it back (as
    ``InferenceService.infer`` does, in a ``finally``): the task's end has nothing left
    to do for it (no done callback still registered); a name that is not batched is
    answered None from what ``admit_request`` found, with no place taken."""
    model, _inner, gate = held
    gate.set()

    async def request() -> tuple[int, int, bool]:
        admit_request("rows")
        task = asyncio.current_task()
        assert task is not None
        admission = admitted("rows")
        assert admission is not None
        left = task.remove_done_callback(admission.release)  # 0: none registered now
        admission.release()
        admission.release()  # once only, and quietly
        admit_request("other")
        return left, model.batcher.queued, admitted("other") is None

    async def scenario() -> tuple[int, int, bool]:
        return await asyncio.ensure_future(request())  # a task of its own, as a server's

    left, queued, unbatched = asyncio.run(scenario())
    assert (left, queued, unbatched) == (0, 0, True)
    assert not model.batcher.full
    places = [admit("rows") for _ in range(2)]  # both places free: none was held back
    assert all(place is not None for place in places)
    for place in places:
        assert place is not None
        place.release()
