"""Loads: each on a thread of its own, with a timeout, warmup, and failure backoff.

``start_if_due`` is the one place a load starts, for requests and for eager control.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from keepwarm.core.backoff import Backoff
from keepwarm.core.budget import Budget
from keepwarm.core.entry import Entry, LoadSpec
from keepwarm.core.reaper import Reaper
from keepwarm.core.states import State
from keepwarm.core.table import Table
from keepwarm.errors import KeepwarmError, ModelLoadError, UnavailableError

#: The longest the interpreter's exit waits for the loads under way.
EXIT_WAIT_SECONDS = 10.0
_exiting = threading.Event()
_running_lock = threading.Lock()
_running: set[threading.Thread] = set()  # load threads under way
_exit_hooks: list[Callable[[float], object]] = []  # after the loads, given the time left


def at_exit(hook: Callable[[float], object]) -> None:
    """``hook(seconds_left)`` at interpreter exit, after the loads under way have ended
    (the batched models' warm runs: ``keepwarm.batching.registry``)."""
    _exit_hooks.append(hook)


def _wait_for_loads_at_exit() -> None:
    """At interpreter exit: no load starts, exit waits for the loads under way, then every
    live batched model starts no further bucket warm run and exit waits for the runs under
    way (``EXIT_WAIT_SECONDS`` in all; the warm runs through ``at_exit``). The interpreter
    ends a daemon thread inside a runtime's call otherwise, and aborts ('terminate called
    without an active exception', exit 134): a script that only loaded the example ONNX
    MLP (batched, its buckets still warming) in 4 of 8 runs; one that started a Repository
    of the example models and left without closing it in 2 of 3."""
    _exiting.set()
    with _running_lock:
        threads = list(_running)
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for hook in list(_exit_hooks):
        hook(max(0.0, deadline - time.monotonic()))


# Before every ``atexit`` handler, the runtimes' teardown among them (run first otherwise:
# they were registered later, at their import; a load that went on into it crashed the
# process, SIGSEGV, in 3 of 3 runs).
threading._register_atexit(_wait_for_loads_at_exit)  # type: ignore[attr-defined]


class Loader:
    def __init__(
        self,
        table: Table,
        budget: Budget,
        reaper: Reaper,
        *,
        load_timeout: float,
        budget_timeout: float,
        backoff: Backoff,
    ) -> None:
        self.load_timeout = load_timeout
        self.budget_timeout = budget_timeout
        self.backoff = backoff
        self.load_seconds = 0.0  # the total, over every load that became READY
        self._table = table
        self._budget = budget
        self._reaper = reaper

    def start_if_due(self, entry: Entry, spec: LoadSpec, deadline: float | None) -> bool:
        """Under the lock: start loading ``entry`` with ``spec`` when a load is due (see
        ``Entry.due``): size it (with the lock released), make room in the budget (waiting
        for leases up to ``deadline`` and the budget timeout), then start the load thread.
        True when this call started the load. The lock may have been released meanwhile:
        callers read the entry again."""
        if entry.idle():
            entry.set_spec(spec)  # a new spec (say, a fixed config) retries at once
        while entry.due() and not entry.estimate_known():
            self._estimate_off_lock(entry)
        if not entry.due():
            return False
        self._reserve_and_start(entry, deadline)
        return True

    def _estimate_off_lock(self, entry: Entry) -> None:
        """Size ``entry``'s files with the lock released; returns with it held."""
        spec = entry.spec
        self._table.lock.release()
        try:
            nbytes = spec.estimate_nbytes()
        finally:
            self._table.lock.acquire()
        entry.estimate = (spec, nbytes)

    def _reserve_and_start(self, entry: Entry, deadline: float | None) -> None:
        table = self._table
        if table.closed:
            raise UnavailableError("the model manager is shutting down")
        if _exiting.is_set():
            raise UnavailableError("the interpreter is exiting: no load starts")
        assert entry.estimate is not None
        entry.reserving = True
        try:
            entry.nbytes = entry.estimate[1]
            budget_deadline = time.monotonic() + self.budget_timeout
            if deadline is not None:
                budget_deadline = min(budget_deadline, deadline)
            self._budget.make_room(entry, budget_deadline)
            if table.closed:  # closed while this load waited for room
                raise UnavailableError("the model manager is shutting down")
        except BaseException:
            entry.reserving = False
            entry.nbytes = 0
            table.changed()
            raise
        entry.reserving = False
        entry.attempt += 1
        table.counters.add("loads")
        table.set_state(entry, State.LOADING)
        attempt = entry.attempt
        timer = threading.Timer(self.load_timeout, self._on_timeout, (entry, attempt))
        timer.daemon = True
        entry.timer = timer
        thread = threading.Thread(
            target=self._run_tracked,
            args=(entry, attempt),
            name=f"keepwarm-load-{entry.key}",
            daemon=True,
        )
        with _running_lock:
            _running.add(thread)
        try:
            timer.start()
            thread.start()
        except RuntimeError as exc:  # no thread could be started
            with _running_lock:
                _running.discard(thread)
            self._fail(entry, ModelLoadError(f"could not start loading {entry.key}: {exc}"))
            raise

    def _run_tracked(self, entry: Entry, attempt: int) -> None:
        try:
            self._run_load(entry, attempt)
        finally:
            with _running_lock:
                _running.discard(threading.current_thread())

    def _run_load(self, entry: Entry, attempt: int) -> None:
        table = self._table
        started = time.perf_counter()
        model: Any = None
        try:
            model = entry.spec.load()
            with table.lock:
                if table.closed or not _current(entry, attempt, State.LOADING):
                    raise _Superseded
                entry.nbytes = int(getattr(model, "nbytes", entry.nbytes) or entry.nbytes)
                table.set_state(entry, State.WARMING)
            note = entry.spec.warmup(model)
        except _Superseded:
            self._discard(entry, attempt, model)
            return
        except BaseException as exc:  # every failure becomes a typed, recorded error
            self._load_failed(entry, attempt, model, exc)
            return
        with table.lock:
            discard = table.closed or not _current(entry, attempt, State.WARMING)
            if not discard:
                entry.model = model
                entry.load_seconds = time.perf_counter() - started
                self.load_seconds += entry.load_seconds
                entry.failures = 0
                entry.error = None
                entry.last_used = time.monotonic()
                entry.cancel_timer()
                table.set_state(entry, State.READY, note if isinstance(note, str) else None)
                self._budget.shrink(entry)
        if discard:
            self._discard(entry, attempt, model)
            return
        watch = getattr(model, "on_broken", None)  # a model that can break once loaded
        if callable(watch):
            watch(lambda reason: self._broken(entry, attempt, reason))

    def _broken(self, entry: Entry, attempt: int, reason: str) -> None:
        """The model loaded by ``attempt`` reported that it can no longer serve (its
        calls fail, whatever they are): FAILED with ``reason``, retried after the backoff;
        leases still held get the model's own errors until they end."""
        with self._table.lock:
            if entry.attempt != attempt or entry.state is not State.READY:
                return
            model, entry.model = entry.model, None
            self._fail(entry, UnavailableError(reason))
        self._reaper.close(model, entry, "broken", None)

    def _discard(self, entry: Entry, attempt: int, model: Any) -> None:
        """A load that returned after its timeout, or after the manager closed."""
        with self._table.lock:
            if (
                self._table.closed
                and entry.attempt == attempt
                and entry.state in (State.LOADING, State.WARMING)
            ):
                self._fail(entry, UnavailableError("the model manager closed during the load"))
        self._reaper.close(
            model, entry, "a load that was no longer wanted returned", self._after_stuck
        )

    def _load_failed(self, entry: Entry, attempt: int, model: Any, exc: BaseException) -> None:
        error = (
            exc
            if isinstance(exc, KeepwarmError)
            else ModelLoadError(
                f"loading {entry.spec.description} failed: {type(exc).__name__}: {exc}",
                format=getattr(entry.spec, "format", None),
            )
        )
        if error is not exc:
            error.__cause__ = exc
        with self._table.lock:
            if entry.attempt == attempt and entry.state in (State.LOADING, State.WARMING):
                self._fail(entry, error)
            elif entry.stuck:
                entry.stuck = False
                entry.nbytes = 0
                self._table.changed()
        if model is not None:
            self._reaper.close(model, entry, "warmup failed", None)

    def _after_stuck(self, entry: Entry) -> None:
        with self._table.lock:
            entry.stuck = False
            if entry.state is not State.READY:
                entry.nbytes = 0
            self._table.changed()

    def _on_timeout(self, entry: Entry, attempt: int) -> None:
        with self._table.lock:
            if entry.attempt == attempt and entry.state in (State.LOADING, State.WARMING):
                entry.stuck = True
                self._fail(
                    entry,
                    ModelLoadError(
                        f"loading {entry.spec.description} did not finish within "
                        f"{self.load_timeout:g} s (timeout); it is not retried until that load "
                        "returns",
                        format=getattr(entry.spec, "format", None),
                    ),
                )

    def _fail(self, entry: Entry, error: KeepwarmError) -> None:
        entry.cancel_timer()
        entry.error = error
        entry.failures += 1
        entry.retry_at = time.monotonic() + self.backoff.delay(entry.failures)
        self._table.counters.add("failures")
        if not entry.stuck:
            entry.nbytes = 0
        self._table.set_state(entry, State.FAILED, error.message)


class _Superseded(Exception):
    """A load returned after it was timed out or replaced; its model is discarded."""


def _current(entry: Entry, attempt: int, state: State) -> bool:
    """True when ``entry`` is still in ``state`` for the load ``attempt`` (not timed out)."""
    return entry.attempt == attempt and entry.state is state
