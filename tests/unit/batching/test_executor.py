"""``ThreadExecutor``: jobs run on its threads (started as jobs need them, never more than
its size), answered through their futures (``submit``) or not at all (``run``: a failure
is logged and the thread goes on); ``close`` cancels the jobs not started and waits for
the running ones. Synchronised with events, never with sleeps."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import CancelledError

import pytest

from keepwarm.batching import ThreadExecutor


def test_submitted_jobs_answer_their_futures_even_with_a_base_exception() -> None:
    pool = ThreadExecutor(2, name="kw-test")
    try:
        assert pool.submit(lambda: 42).result(10) == 42
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(10)

        def leave() -> None:
            raise SystemExit(3)

        with pytest.raises(SystemExit):
            pool.submit(leave).result(10)
        assert pool.submit(threading.current_thread).result(10).name.startswith("kw-test_")
    finally:
        pool.close()


def test_a_run_jobs_failure_is_logged_and_its_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = ThreadExecutor(1)
    done = threading.Event()
    try:
        with caplog.at_level(logging.ERROR, logger="keepwarm.batching"):
            pool.run(lambda: 1 / 0)
            pool.run(done.set)
            assert done.wait(10)
        assert "a batch thread's job failed" in caplog.text
        assert "ZeroDivisionError" in caplog.text
    finally:
        pool.close()


def test_threads_start_as_jobs_need_them_up_to_the_pools_size() -> None:
    pool = ThreadExecutor(2)
    gate = threading.Event()
    entered = [threading.Event() for _ in range(3)]
    names: list[str] = []
    try:
        assert pool.submit(lambda: 1).result(10) == 1  # one thread, idle again
        futures = []
        for event in entered:

            def job(event: threading.Event = event) -> None:
                names.append(threading.current_thread().name)
                event.set()
                assert gate.wait(10)

            futures.append(pool.submit(job))
        assert entered[0].wait(10) and entered[1].wait(10)
        assert not entered[2].is_set()  # both threads busy: the third job waits its turn
        gate.set()
        for future in futures:
            future.result(10)
        assert len(set(names)) == 2 and len(pool._workers) == 2
    finally:
        gate.set()
        pool.close()


def test_close_cancels_jobs_not_started_and_waits_for_the_running_one() -> None:
    pool = ThreadExecutor(1)
    entered, gate = threading.Event(), threading.Event()
    finished: list[str] = []

    def running() -> str:
        entered.set()
        assert gate.wait(10)
        finished.append("running")
        return "done"

    first = pool.submit(running)
    assert entered.wait(10)
    queued = pool.submit(lambda: finished.append("queued"))
    cancelled = threading.Event()
    queued.add_done_callback(lambda _: cancelled.set())
    closer = threading.Thread(target=pool.close)
    closer.start()
    assert cancelled.wait(10)  # taken off before the running job ends
    gate.set()
    closer.join(10)
    assert not closer.is_alive()
    assert first.result(0) == "done" and finished == ["running"]
    with pytest.raises(CancelledError):
        queued.result(0)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_a_platform_without_eventfd_wakes_the_threads_through_a_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    monkeypatch.delattr(os, "eventfd")
    pool = ThreadExecutor(2, name="kw-pipe")
    try:
        futures = [pool.submit(lambda i=i: i * i) for i in range(8)]
        assert [f.result(10) for f in futures] == [i * i for i in range(8)]
    finally:
        pool.close()


@pytest.mark.parametrize("threads", [1, 3])
def test_closed_from_one_of_its_own_threads_its_wakeup_is_closed_too(threads: int) -> None:
    """The thread that closed the pool closes the wake-up once it has read its stop (it
    was left open for good: one descriptor lost per pool so closed)."""
    pool = ThreadExecutor(threads)
    together = threading.Barrier(threads)  # every thread of the pool started
    busy = [pool.submit(lambda: together.wait(10)) for _ in range(threads)]
    for future in busy:
        future.result(10)
    assert len(pool._workers) == threads
    fd = pool._wakeup.read_fd
    before = os.fstat(fd)
    pool.submit(pool.close).result(10)
    for thread in list(pool._workers):
        thread.join(10)
        assert not thread.is_alive()
    try:
        after = os.fstat(fd)
    except OSError:  # closed
        return
    assert (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino), "still open"
