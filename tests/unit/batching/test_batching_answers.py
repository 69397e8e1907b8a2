"""A queued request's ``prepare`` (``batching.serving``; the server's: encode the answer)
runs on the batch thread that runs it, for the whole batch before any request of it is
answered, and never for a request that left the queue; one that raises leaves the answer
to the waiter. Real batcher, real batch thread, a gated model; events, not sleeps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from keepwarm.batching.model import BatchedModel
from keepwarm.batching.serving import Queued, answer_there, begin, finish, prepared, submit
from keepwarm.model import LeasedModel
from support.batch_models import RowLoaded, held_rows

Arrays = dict[str, np.ndarray]


@dataclass
class Busy:
    """A gated model's batch running (``running``) on its one batch thread ("answers_0"):
    the requests queued next wait for the gate."""

    model: BatchedModel
    leased: LeasedModel
    inner: RowLoaded
    gate: threading.Event
    running: Future[Arrays]


@pytest.fixture
def busy() -> Iterator[Busy]:
    with held_rows(max_batch_size=8, max_queue=8, name="answers") as (model, (inner, gate)):
        running = model.batcher.submit(_x(0))
        assert inner.rows.entered.wait(10)
        yield Busy(model, LeasedModel(model, "rows", 3), inner, gate, running)
        gate.set()
        running.result(30)


def _x(value: float) -> Arrays:
    return {"x": np.full((1, 3), value, np.float32)}


class Answers:
    """A ``prepare`` per request, recording where each ran and which requests of the
    batch were answered by then."""

    def __init__(self) -> None:
        self.queued: list[Queued] = []
        self.seen: list[tuple[str, list[bool]]] = []
        self.lock = threading.Lock()

    def prepare(self, tag: str, fail: bool = False) -> Callable[[Arrays], object]:
        def make(outputs: Arrays) -> object:
            with self.lock:
                done = [q.future.done() for q in self.queued]
                self.seen.append((threading.current_thread().name, done))
            if fail:
                raise ValueError("this answer cannot be encoded")
            return tag, outputs["x_echo"].tolist()

        return make


def test_a_batchs_answers_are_made_on_its_batch_thread_before_any_is_answered(
    busy: Busy,
) -> None:
    """Two requests queued from the loop and one queued by a worker thread
    (``answer_there``) run as one batch: each answer is made on the batch thread, none
    of the three answered yet; the loop reads them (``prepared``). A request cancelled
    while queued never runs, and its answer is never made."""
    leased, answers = busy.leased, Answers()

    async def scenario() -> list[Any]:
        for value in (1, 2):
            queued = submit(leased, _x(value), None, ExitStack(), answers.prepare(f"q{value}"))
            answers.queued.append(queued)
        left = submit(leased, _x(9), None, ExitStack(), answers.prepare("left"))
        left.future.cancel()  # its client went away while it was queued
        worker = begin(leased, _x(4), None, ExitStack())  # a worker thread's, queued
        assert isinstance(worker, Queued)
        answer_there(worker, answers.prepare("w4"))
        answers.queued.append(worker)
        busy.gate.set()
        outputs = await asyncio.gather(*(finish(q) for q in answers.queued))
        assert [o["x_echo"].tolist() for o in outputs] == [[[2.0] * 3], [[4.0] * 3], [[8.0] * 3]]
        return [prepared(q) for q in answers.queued]

    made = asyncio.run(scenario())
    inner = busy.inner
    assert made == [("q1", [[2.0] * 3]), ("q2", [[4.0] * 3]), ("w4", [[8.0] * 3])]
    assert inner.rows.calls == [1, 4]  # the three ran as one batch (padded to 4)
    assert np.full(3, 9, np.float32).tobytes() not in set(inner.rows.seen)  # not run
    assert [name for name, _ in answers.seen] == ["answers_0"] * 3
    assert all(done == [False] * 3 for _, done in answers.seen)


def test_an_answer_that_cannot_be_made_there_is_left_to_the_waiter(busy: Busy) -> None:
    """A ``prepare`` that raises on the batch thread: the request is still answered with
    its outputs, nothing prepared (the server's loop then encodes it, and raises there);
    its batch's other requests keep theirs."""
    leased, answers = busy.leased, Answers()

    async def scenario() -> list[Any]:
        for value, fail in ((5, True), (6, False)):
            prepare = answers.prepare(f"q{value}", fail)
            answers.queued.append(submit(leased, _x(value), None, ExitStack(), prepare))
        busy.gate.set()
        outputs = await asyncio.gather(*(finish(q) for q in answers.queued))
        assert [o["x_echo"].tolist() for o in outputs] == [[[10.0] * 3], [[12.0] * 3]]
        return [prepared(q) for q in answers.queued]

    assert asyncio.run(scenario()) == [None, ("q6", [[12.0] * 3])]
    assert len(answers.seen) == 2


def test_a_request_without_prepare_or_answered_before_it_has_nothing_prepared(
    busy: Busy,
) -> None:
    """No ``prepare``: nothing prepared. One set by ``answer_there`` after the batch was
    answered comes too late: nothing prepared either (the loop encodes it)."""
    leased, answers = busy.leased, Answers()

    async def scenario() -> list[Any]:
        plain = submit(leased, _x(1), None, ExitStack())
        late = begin(leased, _x(2), None, ExitStack())
        assert isinstance(late, Queued)
        busy.gate.set()
        await asyncio.gather(finish(plain), finish(late))
        answer_there(late, answers.prepare("late"))
        return [prepared(plain), prepared(late)]

    assert asyncio.run(scenario()) == [None, None]
    assert answers.seen == []
