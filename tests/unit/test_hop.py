"""``keepwarm.hop.HopPool``: calls handed from an event loop to threads and back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from keepwarm.errors import UnavailableError
from keepwarm.hop import HopPool, Wakeup

WAIT_S = 30.0


@pytest.fixture
def pool() -> Iterator[HopPool]:
    made = HopPool(2, "test-hop")
    yield made
    made.close()


def test_results_and_errors_come_back_from_a_worker_thread(pool: HopPool) -> None:
    def boom() -> None:
        raise ValueError("bad input")

    def stop() -> None:
        raise StopIteration

    async def main() -> None:
        ran_on = await pool.submit(threading.current_thread).waiter
        assert ran_on is not threading.current_thread()
        assert ran_on.name.startswith("test-hop_")
        assert await pool.submit(lambda: 42).waiter == 42
        with pytest.raises(ValueError, match="bad input"):
            await pool.submit(boom).waiter
        with pytest.raises(RuntimeError, match="StopIteration"):  # an asyncio future refuses it
            await pool.submit(stop).waiter
        many = [pool.submit(lambda i=i: i * i) for i in range(200)]
        assert [await job.waiter for job in many] == [i * i for i in range(200)]

    asyncio.run(main())


def test_threads_start_as_needed_up_to_the_bound(pool: HopPool) -> None:
    gate = threading.Event()
    entered = threading.Semaphore(0)
    lock = threading.Lock()
    running: list[int] = []
    most = [0]

    def held(i: int) -> int:
        with lock:
            running.append(i)
            most[0] = max(most[0], len(running))
        entered.release()
        gate.wait(WAIT_S)
        with lock:
            running.remove(i)
        return i

    async def main() -> None:
        jobs = [pool.submit(lambda i=i: held(i)) for i in range(5)]
        for _ in range(2):  # both threads busy, the other three queued
            assert await asyncio.to_thread(entered.acquire, True, WAIT_S)
        assert sorted(running) == [0, 1]
        gate.set()
        assert [await job.waiter for job in jobs] == [0, 1, 2, 3, 4]

    asyncio.run(main())
    names = {t.name for t in threading.enumerate() if t.name.startswith("test-hop_")}
    assert names == {"test-hop_0", "test-hop_1"}
    assert most[0] == 2


def test_a_job_cancelled_before_it_starts_never_runs(pool: HopPool) -> None:
    gate = threading.Event()
    started = threading.Barrier(3, timeout=WAIT_S)
    ran: list[str] = []

    def hold() -> str:
        started.wait()
        gate.wait(WAIT_S)
        return "held"

    async def main() -> None:
        holders = [pool.submit(hold), pool.submit(hold)]
        await asyncio.to_thread(started.wait)  # both threads are busy now
        queued = pool.submit(lambda: ran.append("queued"))
        assert queued.cancel()
        assert not queued.cancel()  # once only
        gate.set()
        assert [await job.waiter for job in holders] == ["held", "held"]
        assert await pool.submit(lambda: "after").waiter == "after"  # the queue moved on

    asyncio.run(main())
    assert ran == []


def test_a_job_whose_waiter_went_away_hands_its_result_to_then(pool: HopPool) -> None:
    gate = threading.Event()
    started = threading.Event()
    handed: list[str] = []

    def slow() -> str:
        started.set()
        gate.wait(WAIT_S)
        return "result"

    async def main() -> None:
        job = pool.submit(slow)
        waiting = asyncio.ensure_future(job.waiter)
        await asyncio.to_thread(started.wait, WAIT_S)
        waiting.cancel()  # the caller goes away while the call runs
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not job.cancel()  # too late: it runs
        job.then(handed.append)
        assert handed == []
        gate.set()
        # settled when the loop reads the worker's post (a later job on the pool's other
        # thread may settle first: no order to wait on)
        deadline = time.monotonic() + WAIT_S
        while not handed and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        assert handed == ["result"]

        done = pool.submit(lambda: "done")
        result = await asyncio.shield(done.waiter)
        job_after = []  # settled already: ``then`` calls at once
        done.then(job_after.append)
        assert (result, job_after) == ("done", ["done"])

        failing = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            await failing.waiter
        failing.then(handed.append)  # an error hands nothing over
        assert handed == ["result"]

    asyncio.run(main())


def test_close_cancels_queued_jobs_waits_for_running_ones_and_refuses_more() -> None:
    pool = HopPool(1, "test-hop-close")
    gate = threading.Event()
    started = threading.Event()

    def hold() -> str:
        started.set()
        gate.wait(WAIT_S)
        return "finished"

    async def main() -> None:
        running = pool.submit(hold)
        queued = pool.submit(lambda: "never")
        await asyncio.to_thread(started.wait, WAIT_S)
        closing = asyncio.ensure_future(asyncio.to_thread(pool.close))
        with pytest.raises(asyncio.CancelledError):
            await queued.waiter
        gate.set()
        await closing
        assert await running.waiter == "finished"
        with pytest.raises(UnavailableError, match="shutting down"):
            pool.submit(lambda: None)

    asyncio.run(main())
    assert not [t for t in threading.enumerate() if t.name.startswith("test-hop-close")]
    pool.close()  # again: nothing to do


def test_one_pool_serves_event_loops_one_after_another(pool: HopPool) -> None:
    for value in range(3):
        assert asyncio.run(_call(pool, value)) == value


async def _call(pool: HopPool, value: int) -> int:
    return await pool.submit(lambda: value).waiter


@pytest.mark.parametrize("eventfd", [True, False], ids=["eventfd", "pipe"])
def test_a_semaphore_wakeup_takes_one_post_a_wait(
    eventfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways of waking a thread (the pipe where a platform has no eventfd) count posts:
    a wait takes one, and the next post is still there for the next waiter."""
    import os

    if not eventfd:
        monkeypatch.delattr(os, "eventfd")
    wakeup = Wakeup(semaphore=True)
    try:
        wakeup.post(2)
        wakeup.wait()
        os.set_blocking(wakeup.read_fd, False)
        assert os.read(wakeup.read_fd, 8)  # the second post is still there
        with pytest.raises(BlockingIOError):  # and none is left
            os.read(wakeup.read_fd, 8)
    finally:
        wakeup.close()
