"""Where batches run.

An ``Executor`` runs the batcher's jobs (merge, predict, split) off the caller's thread
and off the event loop. ``ThreadExecutor`` is for runtimes that release the GIL
(TensorFlow, ONNX Runtime): its size comes from the cores and the threads each call
already uses (``intra_op_num_threads``, ``inter_op_num_threads``), so that models running
side by side do not oversubscribe the cores. The worker-process pool implements the same
protocol: its jobs call a model whose ``predict`` runs in another process.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from keepwarm.errors import InvalidConfigError
from keepwarm.hop import Wakeup
from keepwarm.thread_priority import lower_this_thread

_log = logging.getLogger("keepwarm.batching")

T = TypeVar("T")


class Executor(Protocol):
    """Runs jobs; ``slots`` is how many batches of one model may run at once."""

    @property
    def slots(self) -> int: ...

    def submit(self, job: Callable[[], T]) -> Future[T]: ...

    def run(self, job: Callable[[], object]) -> None:
        """``job()`` on a thread, its result dropped (an exception it raises is logged)."""

    def close(self) -> None: ...


def threads_per_call(options: Mapping[str, Any], cores: int) -> int:
    """The threads one model call keeps busy, from its runtime options (the frameworks'
    default for an unset or 0 count is one thread per core)."""
    intra = options.get("intra_op_num_threads")
    inter = options.get("inter_op_num_threads")
    intra_n = intra if type(intra) is int and intra > 0 else cores
    inter_n = inter if type(inter) is int and inter > 0 else 1
    return max(1, intra_n * inter_n)


def pool_size(cores: int | None = None, per_call: int = 0) -> int:
    """Calls that may run at once without oversubscribing ``cores``: ``cores // per_call``
    (at least 1). A runtime using every core per call gets 1: its next batch gathers while
    one runs, and starts on the same thread as soon as it ends."""
    cores = cores or os.cpu_count() or 1
    per_call = per_call or cores
    return max(1, cores // per_call)


class ThreadExecutor:
    """A pool of ``threads`` (default: one per core, at least 2), started as jobs need them;
    it is not the event loop, so a model never runs there.

    A job is handed over as ``keepwarm.hop`` hands a call: queued, then its thread woken
    through ``keepwarm.hop.Wakeup`` (an eventfd, a pipe where there is none; a semaphore:
    one wake per job) written with the interpreter lock let go. ``ThreadPoolExecutor``'s
    ``submit`` wakes its thread (``SimpleQueue.put``) lock in hand: the thread woken wants
    the lock at once, and on a busy machine it pre-empts the waker, lock held, so that
    neither runs. Measured through the server (MLP, 4 clients,
    batching on, ``py-spy --gil``): the event loop held the lock in ``SimpleQueue.put``
    for 12.5% of all samples, the most of any line of the batched path. Against the
    ``ThreadPoolExecutor`` (``bench/ab.py``, MLP, 4 clients, two runs of 6-8 rounds):
    1.045x and 1.060x req/s, server CPU per request 0.93x.
    """

    def __init__(self, threads: int | None = None, *, name: str = "keepwarm-batch") -> None:
        self._threads = threads if threads is not None else max(2, os.cpu_count() or 1)
        if type(self._threads) is not int or self._threads < 1:
            raise InvalidConfigError(f"threads must be an integer >= 1, got {threads!r}")
        self._name = name
        self._jobs: deque[tuple[Callable[[], Any], Future[Any] | None] | None] = deque()
        self._wakeup = Wakeup(semaphore=True)
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._unfinished = 0  # jobs submitted and not yet over
        self._closed = False
        self._closer: threading.Thread | None = None  # a thread of the pool that closed it

    @property
    def slots(self) -> int:
        return self._threads

    def submit(self, job: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue(job, future)
        return future

    def run(self, job: Callable[[], object]) -> None:
        """``job()`` on a thread, with no future to make and answer: the batcher's way
        (a ``Future`` and its ``Condition``, made on the event loop and answered on the
        batch thread while the loop waits for the interpreter lock, were 1.6% of the
        lock's samples with the MLP served at 4 clients)."""
        self._queue(job, None)

    def _queue(self, job: Callable[[], Any], future: Future[Any] | None) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._unfinished += 1
            if self._unfinished > len(self._workers) < self._threads:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._workers)}", daemon=True
                )
                thread.start()
                self._workers.append(thread)
            self._jobs.append((job, future))
        self._wakeup.post()  # the interpreter lock let go for the call

    def _take(self) -> tuple[Callable[[], Any], Future[Any] | None] | None:
        """The next job, once one is posted (None: the pool closed)."""
        while True:
            self._wakeup.wait()
            with self._lock:  # ``close`` takes the jobs not started under it too
                if self._jobs:
                    return self._jobs.popleft()
            # none: the job posted was cancelled by ``close``; its stop is posted next

    def _work(self) -> None:
        lower_this_thread("executor")
        while (taken := self._take()) is not None:
            job, future = taken
            if future is None:
                try:
                    job()
                except BaseException:
                    _log.exception("a batch thread's job failed")
            elif future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:  # the future's, as ThreadPoolExecutor does
                    future.set_exception(exc)
                    del exc
            with self._lock:
                self._unfinished -= 1
        if self._closer is threading.current_thread():  # the last thread: the others joined
            self._wakeup.close()

    def close(self) -> None:
        """Take no more jobs; cancel those not started; wait for the running ones."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers)
            left = list(self._jobs)
            self._jobs.clear()
            self._jobs.extend([None] * len(workers))  # one stop per thread
        for taken in left:
            if taken is not None and taken[1] is not None:
                taken[1].cancel()
        if workers:
            self._wakeup.post(len(workers))
        me = threading.current_thread()
        for thread in workers:
            if thread is not me:
                thread.join()
        if me in workers:  # it still reads its stop: it closes the wake-up after that
            self._closer = me
        else:
            self._wakeup.close()
