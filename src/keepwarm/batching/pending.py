"""``Pending``: the future of a request queued for its batch.

A ``concurrent.futures.Future`` made for every queued request builds a ``Condition``
(a Python object around a reentrant lock) and goes through it at each step: about 3 µs
of a request's path, most of it on the event loop. ``Pending`` keeps the same states,
answers and errors with one plain lock, and makes what only a blocked caller needs (an
``Event`` to sleep on) when one blocks: the event loop never does, and neither does a
caller whose request ran at once.

It is still a ``Future`` (``asyncio.wrap_future`` and type checks take it), and
``concurrent.futures.wait`` works on it (``_condition`` is its lock, ``_waiters`` made on
first use).

``prepare``: what its awaiting event loop would do first with the outputs (the server's:
encode the answer), done instead by the batch thread that answers it (``ready``), before
the future is answered; ``prepared`` holds it (``NOT_PREPARED``: it was not done, or
raised: the waiter does it, and sees its error).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError, TimeoutError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
)
from contextlib import suppress
from typing import Any, cast

from keepwarm.batching.merge import Arrays

_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))
#: ``Pending.prepared`` before (or without) ``prepare``'s result.
NOT_PREPARED: Any = object()


class Pending(Future[Arrays]):
    """A queued request's future (see the module docstring). State changes happen under
    ``_lock``; what they wake (a blocked caller, ``wait``'s waiters, the done callbacks)
    is woken after it is let go. Reads of a state (``done``, ``cancelled``, a finished
    ``result``) take no lock: one attribute read, a snapshot either way."""

    def __init__(
        self, prepare: Callable[[Arrays], object] | None = None
    ) -> None:  # no ``Future.__init__``: no Condition
        self.prepare = prepare
        self.prepared: Any = NOT_PREPARED
        self._lock = threading.Lock()
        self._state = PENDING
        self._result: Arrays | None = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Future[Arrays]], object]] = []
        self._event: threading.Event | None = None  # made by the first blocked caller
        self._waiter_list: list[Any] | None = None  # ``concurrent.futures.wait``'s

    # ``concurrent.futures.wait``, ``as_completed`` and ``repr`` use these two.
    @property
    def _condition(self) -> threading.Lock:  # type: ignore[override]
        return self._lock

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        """Read under ``_lock`` (``wait`` holds it when it adds one)."""
        if self._waiter_list is None:
            self._waiter_list = []
        return self._waiter_list

    # ----------------------------------------------------------------- reading

    def done(self) -> bool:
        return self._state in _DONE

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    def running(self) -> bool:
        return self._state == RUNNING

    def result(self, timeout: float | None = None) -> Arrays:
        if self._state != FINISHED:
            self._block(timeout)
        if self._exception is not None:
            raise self._exception
        return cast(Arrays, self._result)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state != FINISHED:
            self._block(timeout)
        return self._exception

    def _block(self, timeout: float | None) -> None:
        """Until done (``CancelledError`` when cancelled; ``TimeoutError`` after
        ``timeout`` seconds while still not done)."""
        with self._lock:
            if self._state not in _DONE:
                if self._event is None:
                    self._event = threading.Event()
                event = self._event
            else:
                event = None
        if event is not None:
            event.wait(timeout)
        if self._state in _CANCELLED:
            raise CancelledError()
        if self._state != FINISHED:
            raise TimeoutError()

    # ---------------------------------------------------------------- changing

    def ready(self, outputs: Arrays) -> None:
        """Before ``set_result(outputs)``, on the answering thread: ``prepared`` made by
        ``prepare`` (if any; one that raises is left to the waiter, which raises it)."""
        prepare = self.prepare
        if prepare is not None:
            with suppress(Exception):  # the waiter prepares again, and raises there
                self.prepared = prepare(outputs)

    def add_done_callback(self, fn: Callable[[Future[Arrays]], object]) -> None:
        with self._lock:
            if self._state not in _DONE:
                self._callbacks.append(fn)
                return
        self._call(fn)

    def cancel(self) -> bool:
        with self._lock:
            state = self._state
            if state in (RUNNING, FINISHED):
                return False
            if state in _CANCELLED:
                return True
            self._state = CANCELLED
        self._settled()
        return True

    def set_running_or_notify_cancel(self) -> bool:
        with self._lock:
            state = self._state
            if state == PENDING:
                self._state = RUNNING
                return True
            if state != CANCELLED:
                raise RuntimeError(f"Future in unexpected state: {state}")
            self._state = CANCELLED_AND_NOTIFIED
            waiters = self._waiter_list or ()
        for waiter in waiters:
            waiter.add_cancelled(self)
        return False

    def set_result(self, result: Arrays) -> None:
        self._finish(result, None, failed=False)

    def set_exception(self, exception: BaseException | None) -> None:
        self._finish(None, exception, failed=True)

    def _finish(
        self, result: Arrays | None, exception: BaseException | None, *, failed: bool
    ) -> None:
        with self._lock:
            done = self._state in _DONE
            if not done:
                self._result, self._exception = result, exception
                self._state = FINISHED
                waiters = self._waiter_list or ()
        if done:  # said outside the lock: ``repr`` takes it
            raise InvalidStateError(f"{self._state}: {self!r}")
        for waiter in waiters:
            if failed:
                waiter.add_exception(self)
            else:
                waiter.add_result(self)
        self._settled()

    def _settled(self) -> None:
        """After a change to a final state (made under the lock): wake a blocked caller,
        then call the done callbacks, in the order they were added."""
        if self._event is not None:
            self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            self._call(fn)

    def _call(self, fn: Callable[[Future[Arrays]], object]) -> None:
        try:
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)
