"""A worker thread's request that found its model idle (``Batcher.run_alone``) while another
request queues in the instant between that check and its run: it is still served, and still
leaves the queue unrun when its client goes. The instant is forced with a hook on the real
batcher's vacancy check, which queues a request right after the check said "vacant"."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack
from typing import Any

import numpy as np
import pytest

from keepwarm.batching import PadAxes, ThreadExecutor
from keepwarm.batching.dispatch import Dispatch
from keepwarm.batching.model import BatchedModel
from keepwarm.batching.serving import Queued, Ticket, begin, finish
from keepwarm.model import LeasedModel
from support.batch_models import RowLoaded, x_rows


class Window(Dispatch):
    """The batcher's own ``Dispatch``, whose vacancy check runs ``hook`` (once) after it
    found the model vacant: the instant before the caller's run."""

    hook: Callable[[], None] | None = None

    @property
    def vacant(self) -> bool:
        found = bool(Dispatch.vacant.fget(self))  # type: ignore[attr-defined]
        hook, self.hook = self.hook, None
        if found and hook is not None:
            hook()
        return found


class Watched(Ticket):
    """A ticket that says when the worker thread has handed it the request's future (the
    thread waits for the batch next)."""

    def __init__(self) -> None:
        super().__init__()
        self.bound = threading.Event()

    def bind(self, future: Future[dict[str, np.ndarray]]) -> bool:
        kept = super().bind(future)
        self.bound.set()
        return kept


@pytest.fixture
def window() -> Iterator[tuple[BatchedModel, RowLoaded, threading.Event, list[Future[Any]]]]:
    """A batched model over a gated ``RowLoaded`` (one slot) whose vacancy check, once
    vacant, starts a batch (0, which waits for the gate) and queues a request behind it
    (1): the futures of both are in the list given."""
    gate = threading.Event()
    inner = RowLoaded(gate)
    executor = ThreadExecutor(1)
    model = BatchedModel(
        inner, name="rows", version=3, max_batch_size=4, max_delay_ms=0, max_queue=8,
        pad_axes=PadAxes(), executor=executor,
    )  # fmt: skip
    others: list[Future[Any]] = []

    def queue_meanwhile() -> None:
        others.append(model.batcher.submit(x_rows(0)))
        assert inner.rows.entered.wait(10)  # batch 0 runs (held at the gate)
        others.append(model.batcher.submit(x_rows(1)))  # queued behind it
        assert model.batcher.queued == 1

    model.batcher._dispatch.__class__ = Window
    model.batcher._dispatch.hook = queue_meanwhile  # type: ignore[attr-defined]
    yield model, inner, gate, others
    gate.set()
    model.close()
    executor.close()


def _begin_on_thread(model: BatchedModel, value: float, ticket: Ticket) -> tuple[Any, list[Any]]:
    """``begin`` of ``value`` on a worker thread under a lease; the thread and what it
    returned (or raised), once it returns."""
    found: list[Any] = []

    def work() -> None:
        stack = ExitStack()
        try:
            found.append(begin(LeasedModel(model, "rows", 3), x_rows(value), None, stack, ticket))
        except BaseException as exc:
            found.append(exc)
        finally:
            stack.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread, found


def test_a_request_queued_in_the_instant_after_the_idle_check_is_served(window: tuple) -> None:
    """The request that found the model idle queues behind the one queued meanwhile and is
    answered by the batch after (its own result), the worker thread back in its pool
    meanwhile (``Queued``), not waiting there until the batch runs."""
    model, inner, gate, others = window
    ticket = Watched()
    thread, found = _begin_on_thread(model, 5, ticket)
    thread.join(10)
    assert not thread.is_alive(), "the worker thread waited for the batch"
    assert len(others) == 2 and ticket.bound.is_set()
    (queued,) = found
    assert isinstance(queued, Queued) and not queued.future.done()

    async def scenario() -> dict[str, np.ndarray]:
        task = asyncio.ensure_future(finish(queued))
        await asyncio.sleep(0)
        gate.set()
        return await task

    outputs = asyncio.run(scenario())
    assert outputs["x_echo"].tolist() == [[10, 10, 10]]
    assert outputs["x_sum"].tolist() == [15]
    assert [f.result(30)["x_echo"].tolist() for f in others] == [[[0, 0, 0]], [[2, 2, 2]]]
    assert np.full(3, 5, np.float32).tobytes() in inner.rows.seen


def test_a_request_queued_in_that_instant_leaves_unrun_when_its_client_goes(
    window: tuple,
) -> None:
    """Its client goes while it waits for its batch: the ticket the event loop holds
    takes it out of the queue, the worker thread returns, and it never runs."""
    model, inner, gate, others = window
    ticket = Watched()
    thread, found = _begin_on_thread(model, 6, ticket)
    assert ticket.bound.wait(10), "the request never waited through the ticket"
    ticket.cancel()  # the client went away
    thread.join(10)
    assert not thread.is_alive()
    (queued,) = found
    assert isinstance(queued, Queued) and queued.future.cancelled()
    gate.set()
    assert [f.result(30)["x_echo"].tolist() for f in others] == [[[0, 0, 0]], [[2, 2, 2]]]
    model.predict(x_rows(7))  # a batch after: the cancelled request was not in it either
    assert np.full(3, 6, np.float32).tobytes() not in inner.rows.seen
    assert model.stats().cancelled == 1
