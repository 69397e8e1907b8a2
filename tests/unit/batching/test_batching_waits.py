"""``batching.waits``: queued requests' waits on an event loop, answered from batch threads
(one loop call per batch), expired at their deadline, their clients watched only once
they have waited ``WATCH_AFTER_SECONDS``; events, not sleeps."""

from __future__ import annotations

import asyncio
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
