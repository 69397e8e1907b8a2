"""Calls handed from an event loop to a pool of threads and back, each side woken through
a file descriptor written with the interpreter lock let go.

``concurrent.futures.ThreadPoolExecutor`` wakes its worker (``SimpleQueue.put``) and, with
``asyncio.wrap_future``, the event loop (``call_soon_threadsafe``) while the waker holds the
interpreter lock: the thread woken wants the lock at once, finds it held and sleeps again
until the waker lets go (two or three wake-ups per hand-off instead of one), and on a busy
machine the waker is often pre-empted by the thread it woke, lock in hand, so that
neither runs. Here the loop wakes a worker with ``os.eventfd_write`` (or a pipe's
``os.write``), which lets the lock go for the system call, and the worker wakes the loop
the same way as the last thing it does: whichever side is woken finds the lock free.
At concurrency 1 on the MLP (a bare app, ``wrk -c1``, loaded machine) this took the
hand-off from 0.73 to 0.45 ms at p50 and server CPU per request 0.70x.

Tried and not faster (the MLP's flat call handed over from uvloop in one process, 0.2 ms
between calls, 6 rounds of 1500 interleaved, load ~3 on 2 vCPUs; p50 of the hand-off and
call, against 382 µs here): the loop and the worker pinned to one CPU
(``os.sched_setaffinity``) 460 µs (faster in 2 rounds of 6); pinned to different CPUs
780 µs (slower in every round); a pipe's wake-ups (the kernel's synchronous wake-up,
which prefers the waker's CPU) 554 µs (slower in 5 rounds of 6). Nor, at concurrency 1,
one TensorFlow intra-op thread instead of two (``TF_NUM_INTRAOP_THREADS=1``;
``bench/ab.py``, v2 JSON, 6 rounds): p50 0.650 against 0.645 ms, CPU per request 0.96x:
the MLP's kernels do not wake a second thread at batch 1. What did help was the call
itself: each input's tensor made anew per call cost as much as the model in the
server (``runtimes/_inputslots.py``).

``HopPool(workers, name)``: ``job = pool.submit(fn)`` on an event loop, ``await job.waiter``
for ``fn()``'s result or exception; ``job.cancel()`` (True: it had not started and never
will); ``job.then(callback)``: ``callback(result)`` once a job whose waiter was cancelled
has returned, for results that hold something to give back. Threads start as work needs
them, up to ``workers``. ``close()`` stops them (jobs not started are cancelled).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from keepwarm.errors import UnavailableError

T = TypeVar("T")


class Wakeup:
    """A counter threads wait on and post to, the interpreter lock let go for both: an
    eventfd in semaphore mode (one wait per post), or a pipe (one byte per post)."""

    def __init__(self, *, semaphore: bool) -> None:
        if hasattr(os, "eventfd"):
            flags = os.EFD_CLOEXEC | (os.EFD_SEMAPHORE if semaphore else os.EFD_NONBLOCK)
            self.read_fd = self.write_fd = os.eventfd(0, flags)
            self._event = True
        else:  # pragma: no cover - platforms without eventfd
            self.read_fd, self.write_fd = os.pipe()
            os.set_blocking(self.read_fd, semaphore)
            self._event = False
        self._semaphore = semaphore

    def post(self, count: int = 1) -> None:
        if self._event:
            os.eventfd_write(self.write_fd, count)
        else:  # pragma: no cover
            os.write(self.write_fd, b"\0" * count)

    def wait(self) -> None:
        """One post taken (blocking: a semaphore's); or, non-blocking, every post so far."""
        try:
            if self._event:
                os.eventfd_read(self.read_fd)
            else:  # pragma: no cover
                os.read(self.read_fd, 1 if self._semaphore else 1 << 16)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.read_fd)
        if self.write_fd != self.read_fd:  # pragma: no cover
            os.close(self.write_fd)


class _Channel:
    """Jobs done for one event loop: the worker appends, then posts; the loop's reader
    takes every job done so far."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.done: deque[Job[Any]] = deque()
        self.wakeup = Wakeup(semaphore=False)
        loop.add_reader(self.wakeup.read_fd, self.ready)

    def ready(self) -> None:
        self.wakeup.wait()
        self.settle()

    def settle(self) -> None:
        done = self.done
        while done:
            job = done.popleft()
            try:
                job.settle()
            except Exception as exc:  # a ``then`` callback's: the other jobs still settle
                self.loop.call_exception_handler(
                    {"message": "a hop's callback failed", "exception": exc}
                )

    def close(self) -> None:
        """Stop reading (on the loop's thread when it runs elsewhere), settle the jobs done
        meanwhile and close the fds."""

        def detach() -> None:
            if not self.loop.is_closed():
                self.loop.remove_reader(self.wakeup.read_fd)
                self.settle()
            self.wakeup.close()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self.loop.is_running() and running is not self.loop:
            self.loop.call_soon_threadsafe(detach)
        else:
            detach()


class Job(Generic[T]):
    """One call handed to the pool (see the module docstring)."""

    __slots__ = (
        "_after", "_channel", "_fn", "_ok", "_pool", "_settled", "_start", "_value", "waiter"
    )  # fmt: skip

    def __init__(self, pool: HopPool, fn: Callable[[], T], channel: _Channel) -> None:
        self._pool = pool
        self._fn: Callable[[], T] | None = fn
        self._channel = channel
        self.waiter: asyncio.Future[T] = channel.loop.create_future()
        self._start = [True]  # popped by whichever comes first: the worker or ``cancel``
        self._ok = False
        self._value: Any = None
        self._settled = False
        self._after: Callable[[T], None] | None = None

    def cancel(self) -> bool:
        """True when the call had not started (it never will now); on the loop."""
        try:
            self._start.pop()
        except IndexError:
            return False
        self._fn = None
        self._pool.ended()
        return True

    def then(self, callback: Callable[[T], None]) -> None:
        """``callback(result)`` once the call has returned (now if it has), unless it
        raised; for a job whose waiter was cancelled after it started. On the loop."""
        if self._settled:
            if self._ok:
                callback(self._value)
        else:
            self._after = callback

    def run(self) -> None:
        """On a worker: the call, unless it was cancelled first; then the loop is woken."""
        try:
            self._start.pop()
        except IndexError:
            return
        fn, self._fn = self._fn, None
        assert fn is not None
        try:
            self._value = fn()
            self._ok = True
        except StopIteration as exc:  # an asyncio future refuses it, as a coroutine would
            self._value = RuntimeError(f"the call raised StopIteration: {exc!r}")
        except BaseException as exc:  # the waiter's, as ThreadPoolExecutor does
            self._value = exc
        channel = self._channel
        channel.done.append(self)
        channel.wakeup.post()  # the lock let go: the loop, woken, finds it free

    def settle(self) -> None:
        """On the loop: the outcome to the waiter (or to ``then``'s callback)."""
        self._settled = True
        self._pool.ended()
        waiter = self.waiter
        if waiter.cancelled():
            after, self._after = self._after, None
            if after is not None and self._ok:
                after(self._value)
        elif self._ok:
            waiter.set_result(self._value)
        else:
            waiter.set_exception(self._value)
            self._value = None  # no cycle through the traceback

    def drop(self) -> None:
        """Never to run (the pool closed): its waiter is cancelled, on its loop."""
        if not self.cancel():
            return
        loop = self._channel.loop
        if not loop.is_closed():
            loop.call_soon_threadsafe(self.waiter.cancel)


class HopPool:
    """See the module docstring."""

    def __init__(self, workers: int, name: str) -> None:
        self._max = max(1, workers)
        self._name = name
        self._jobs: deque[Job[Any] | None] = deque()
        self._wakeup = Wakeup(semaphore=True)
        self._channels: dict[asyncio.AbstractEventLoop, _Channel] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._unfinished = 0  # submitted and neither settled nor cancelled
        self._closed = False

    def submit(self, fn: Callable[[], T]) -> Job[T]:
        """``fn()`` on a worker thread; call on an event loop (``await job.waiter``)."""
        loop = asyncio.get_running_loop()
        channel = self._channels.get(loop)
        with self._lock:
            if self._closed:
                raise UnavailableError("the server is shutting down; retry on another server")
            if channel is None:
                channel = self._channel(loop)
            self._unfinished += 1
            if self._unfinished > len(self._threads) and len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            # queued under the lock: ``close`` either refuses the job or cancels it
            job = Job(self, fn, channel)
            self._jobs.append(job)
            self._wakeup.post()
        return job

    def _channel(self, loop: asyncio.AbstractEventLoop) -> _Channel:
        """``loop``'s channel, new (under the lock). Those of closed loops are let go when
        no job is unfinished (a worker may still post to one: its fd stays open till then)."""
        if self._unfinished == 0:
            for gone in [other for other in self._channels if other.is_closed()]:
                self._channels.pop(gone).close()
        channel = self._channels[loop] = _Channel(loop)
        return channel

    def ended(self) -> None:
        """A job is over: settled on its loop, or cancelled before it started."""
        with self._lock:
            self._unfinished -= 1

    def _work(self) -> None:
        jobs, wakeup = self._jobs, self._wakeup
        while True:
            wakeup.wait()
            try:
                job = jobs.popleft()
            except IndexError:  # its job was cancelled by ``close``
                continue
            if job is None:
                return
            job.run()

    def close(self) -> None:
        """Stop the threads once their calls return; jobs not started are cancelled."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        left = []
        while True:
            try:
                left.append(self._jobs.popleft())
            except IndexError:
                break
        for job in left:
            if job is not None:
                job.drop()
        self._jobs.extend([None] * len(threads))
        if threads:
            self._wakeup.post(len(threads))
        for thread in threads:
            thread.join()
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._wakeup.close()
