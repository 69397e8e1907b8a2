"""The waits of a request run on its caller's thread: slots handed out first come first
served, given up when the client leaves or the deadline passes; a queued request that
leaves its batch's queue lets go of its lease."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from contextlib import ExitStack

import numpy as np
import pytest

from keepwarm.batching.serving import Queued
from keepwarm.errors import DeadlineExceededError
from keepwarm.service_blocking import Call, Slots, wait_queued
from keepwarm.service_book import Gone
from support.waiting import wait_until

WAIT_S = 10.0
WHY = "the deadline passed"


def _waiter(
    slots: Slots, call: Call, deadline: float | None, log: list[str], tag: str
) -> threading.Thread:
    def run() -> None:
        try:
            with slots.hold(call, deadline, WHY):
                log.append(tag)
        except (Gone, DeadlineExceededError) as exc:
            log.append(f"{tag}:{type(exc).__name__}")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _queued(slots: Slots, n: int) -> bool:
    return slots.waiting == n


def test_slots_go_first_come_first_served_and_leavers_give_up() -> None:
    slots, log = Slots(1), []
    holder = Call()
    with slots.hold(holder, None, WHY):
        first, leaver, second = Call(), Call(), Call()
        threads = [_waiter(slots, first, None, log, "first")]
        assert wait_until(lambda: _queued(slots, 1))
        threads.append(_waiter(slots, leaver, None, log, "leaver"))
        assert wait_until(lambda: _queued(slots, 2))
        threads.append(_waiter(slots, second, None, log, "second"))
        assert wait_until(lambda: _queued(slots, 3))
        leaver.leave()
        # Its thread logs once it has left the line (it leaves, then says so): waited
        # for; a look between the two could find the line left and the log empty.
        assert wait_until(lambda: log == ["leaver:Gone"])
        assert _queued(slots, 2)
    for thread in threads:
        thread.join(WAIT_S)
    assert log == ["leaver:Gone", "first", "second"]
    with slots.hold(Call(), None, WHY):  # every slot came back
        pass


def test_a_deadline_that_passes_while_waiting_raises_and_frees_the_place() -> None:
    slots, log = Slots(1), []
    with slots.hold(Call(), None, WHY):
        late = _waiter(slots, Call(), time.monotonic() + 0.05, log, "late")
        late.join(WAIT_S)
        assert log == ["late:DeadlineExceededError"]
        assert _queued(slots, 0)


def test_a_call_that_left_before_its_turn_never_holds() -> None:
    slots = Slots(1)
    call = Call()
    call.leave()
    # A free slot is taken at once: the caller checks ``left`` before it runs anything.
    with slots.hold(call, None, WHY), pytest.raises(Gone):
        call.check(None, WHY)


def _queued_request(
    future: Future[dict[str, np.ndarray]], deadline: float | None
) -> tuple[Queued, list[str]]:
    released: list[str] = []
    stack = ExitStack()
    stack.callback(released.append, "lease")
    return Queued(future, "m", 1, stack, deadline), released


def test_a_queued_request_that_is_answered_lets_go_of_its_lease() -> None:
    future: Future[dict[str, np.ndarray]] = Future()
    queued, released = _queued_request(future, None)
    answer = {"y": np.ones(2)}
    threading.Thread(target=future.set_result, args=(answer,)).start()
    assert wait_queued(queued, Call()) is answer
    assert released == ["lease"]


def test_a_queued_request_whose_client_leaves_leaves_the_queue() -> None:
    future: Future[dict[str, np.ndarray]] = Future()
    queued, released = _queued_request(future, None)
    call = Call()
    threading.Thread(target=call.leave).start()
    with pytest.raises(Gone):
        wait_queued(queued, call)
    assert future.cancelled() and released == ["lease"]


def test_a_queued_request_past_its_deadline_leaves_the_queue() -> None:
    future: Future[dict[str, np.ndarray]] = Future()
    queued, released = _queued_request(future, time.monotonic() + 0.05)
    with pytest.raises(DeadlineExceededError, match="waited for its batch"):
        wait_queued(queued, Call())
    assert future.cancelled() and released == ["lease"]


def test_an_absurdly_far_deadline_waits_without_overflowing() -> None:
    call = Call()
    threading.Thread(target=call.nudge).start()
    call.wait(time.monotonic() + 1e30)  # an OverflowError here without the bound
    call.check(time.monotonic() + 1e30, WHY)
