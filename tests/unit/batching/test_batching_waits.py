"""``batching.waits``: queued requests' waits on an event loop, answered from batch threads
(one loop call per batch), expired at their deadline, their clients watched only once
they have waited ``WATCH_AFTER_SECONDS``; events, not sleeps."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from concurrent.futures import Future
from typing import Any

from keepwarm.batching import waits
from keepwarm.batching.waits import DONE, EXPIRED, GONE, WATCH_AFTER_SECONDS, Wait


def test_answers_set_on_a_batch_thread_wake_every_wait() -> None:
    async def scenario() -> list[str]:
        futures: list[Future[Any]] = [Future() for _ in range(8)]
        tasks = [asyncio.ensure_future(Wait(f, None).wait(None)) for f in futures]
        await asyncio.sleep(0)  # each wait is registered

        def batch() -> None:  # as a batch thread delivers a batch
            for index, future in enumerate(futures):
                future.set_result(index)

        thread = threading.Thread(target=batch)
        thread.start()
        woken = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        thread.join()
        return woken

    assert asyncio.run(scenario()) == [DONE] * 8


def test_an_answered_request_never_watches_its_client_and_leaves_no_state() -> None:
    watched = []

    async def disconnected() -> None:
        watched.append(1)
        await asyncio.Event().wait()

    async def scenario() -> str:
        future: Future[Any] = Future()
        task = asyncio.ensure_future(Wait(future, disconnected).wait(None))
        await asyncio.sleep(0)
        future.set_result(1)
        return await asyncio.wait_for(task, 10)

    assert asyncio.run(scenario()) == DONE
    assert watched == []
    assert waits._sides == {}  # the loop's shared state left with its last wait


def test_a_waiting_client_is_watched_after_the_watch_delay_and_its_leaving_ends_the_wait() -> None:
    async def scenario() -> tuple[str, float]:
        began = time.monotonic()
        future: Future[Any] = Future()
        gone_at: list[float] = []

        async def disconnected() -> None:  # the client has gone: returns at once
            gone_at.append(time.monotonic())

        woken = await asyncio.wait_for(Wait(future, disconnected).wait(None), 10)
        assert not future.done()
        return woken, gone_at[0] - began

    woken, after = asyncio.run(scenario())
    assert woken == GONE
    assert WATCH_AFTER_SECONDS <= after < 10


def test_a_deadline_ends_the_wait_unanswered() -> None:
    async def scenario() -> str:
        future: Future[Any] = Future()
        return await asyncio.wait_for(Wait(future, None).wait(time.monotonic() + 0.01), 10)

    assert asyncio.run(scenario()) == EXPIRED


class Client:
    """Stands for the request whose ``disconnected`` a wait holds (the server's refers to
    its ASGI cycle and more)."""

    async def disconnected(self) -> None:
        await asyncio.Event().wait()


def _garbage_after(scenario: Any) -> set[str]:
    """The types left in reference cycles once ``scenario`` ran: what only the garbage
    collector could free (it is kept off meanwhile)."""
    gc.collect()
    gc.disable()
    try:
        asyncio.run(scenario())
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found = {type(o).__qualname__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    return found


def test_an_answered_wait_leaves_no_reference_cycle() -> None:
    async def scenario() -> None:
        future: Future[Any] = Future()
        task = asyncio.ensure_future(Wait(future, Client().disconnected).wait(None))
        await asyncio.sleep(0)
        future.set_result(1)
        assert await asyncio.wait_for(task, 10) == DONE

    assert not {"Wait", "Future", "Client"} & _garbage_after(scenario)


def test_an_expired_wait_whose_client_was_watched_leaves_no_reference_cycle() -> None:
    async def scenario() -> None:
        future: Future[Any] = Future()
        wait = Wait(future, Client().disconnected)
        deadline = time.monotonic() + 3 * WATCH_AFTER_SECONDS  # the watch starts first
        assert await asyncio.wait_for(wait.wait(deadline), 10) == EXPIRED
        future.set_result(1)  # its batch ran after all: the answer finds the wait over
        await asyncio.sleep(0.01)

    assert not {"Wait", "Future", "Client"} & _garbage_after(scenario)
