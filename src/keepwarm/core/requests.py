"""The request side of the manager: leases, taken without a lock when the key is READY.

A lease takes its count first (``entry.holders.append``, atomic), then checks that the
entry is still READY; otherwise it gives the count back and takes the slow path. An
unload publishes DRAINING first and reads the count after (``Table.drain``), so a version
never unloads under a request that holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Callable, Hashable
from typing import Any

from keepwarm.core.budget import Budget
from keepwarm.core.entry import Entry, LoadSpec
from keepwarm.core.lease import Lease
from keepwarm.core.loader import Loader
from keepwarm.core.states import State
from keepwarm.core.table import Table
from keepwarm.core.timeouts import check_timeout
from keepwarm.errors import (
    DeadlineExceededError,
    KeepwarmError,
    ModelNotFoundError,
    UnavailableError,
)

AccessHook = Callable[[Hashable, bool], None]
_READY = State.READY
_monotonic = time.monotonic


class Requests:
    def __init__(
        self, table: Table, budget: Budget, loader: Loader, on_access: AccessHook | None
    ) -> None:
        self._table = table
        self._budget = budget
        self._loader = loader
        self._on_access = on_access
        # Bound once: the hot path pays no attribute lookups for them.
        self._get = table.get
        self._hit = table.counters.hit
        self._released = table.released
        self._record = budget.record if budget.bounded else None
        # Whether a hit has more to do than be counted (one test on the hot path).
        self._tracked = self._record is not None or on_access is not None

    # ------------------------------------------------------------- no lock

    def take(self, entry: Entry) -> bool:
        """Count a lease on ``entry`` if it is READY: the count first, then the check
        (given back when the entry is not READY). True when taken, counted as a hit.
        Takes no lock: the hot path of every request."""
        holders = entry.holders
        holders.append(None)
        if entry.state is _READY:
            self._hit()
            if self._tracked:
                try:
                    self._track(entry)
                except BaseException:  # the caller's hook or policy: the count goes back
                    holders.pop()
                    self._released(entry)
                    raise
            return True
        holders.pop()
        self._released(entry)
        return False

    def _track(self, entry: Entry) -> None:
        """A hit's recency and frequency (under a budget: eviction needs them) and the
        access hook."""
        if self._record is not None:
            entry.last_used = _monotonic()
            self._record(entry.key)
        if self._on_access is not None:
            self._on_access(entry.key, True)

    def give(self, entry: Entry) -> None:
        """Give back a count taken by ``take`` (the version may unload now)."""
        entry.holders.pop()
        if entry.state is not _READY or self._table.room_waiters:
            self._released(entry)  # a drain may end, or a load may find room

    def try_lease(self, entry: Entry, model: Any = None) -> Lease | None:
        """A lease on ``entry`` when it is READY (``model``: what the lease hands out,
        the loaded model by default); None otherwise. Takes no lock."""
        if self.take(entry):
            return Lease(entry, entry.model if model is None else model, self.give)
        return None

    def try_acquire(self, key: Hashable) -> Lease | None:
        """A lease when ``key`` is READY, else None. Never blocks, never starts a load."""
        entry = self._get(key)
        if entry is not None and entry.state is _READY and self.take(entry):
            return Lease(entry, entry.model, self.give)
        return None

    # ------------------------------------------------------------- blocking

    def acquire(self, key: Hashable, spec: LoadSpec | None, timeout: float | None) -> Lease:
        lease = self.try_acquire(key)
        if lease is not None:
            return lease
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        ticket = _Ticket()
        with self._table.lock:
            if self._budget.bounded:
                self._budget.record(key)  # the policy counts arrivals, for the victim choice
            try:
                while True:
                    lease = self._step(key, spec, deadline, ticket)
                    if lease is not None:
                        return lease
                    if ticket.ready():
                        continue
                    self._wait(deadline, f"waiting for {key} to load")
            finally:
                ticket.done()

    async def acquire_async(
        self, key: Hashable, spec: LoadSpec | None, timeout: float | None
    ) -> Lease:
        """``acquire`` for an event loop: the loop never waits on the lock's condition;
        a state change wakes this request through ``call_soon_threadsafe``. Cancelled, it
        leaves no lease and no waiter behind."""
        lease = self.try_acquire(key)
        if lease is not None:
            return lease
        loop = asyncio.get_running_loop()
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        table = self._table
        ticket = _Ticket()
        if self._budget.bounded:
            self._budget.record(key)
        try:
            while True:
                woken: asyncio.Future[None] = loop.create_future()
                waker = _waker(loop, woken)
                table.add_waker(waker)  # before the look: no change is missed
                try:
                    with table.lock:
                        # No waiting for room in the budget here: the deadline is now.
                        lease = self._step(key, spec, time.monotonic(), ticket)
                    if lease is not None:
                        return lease
                    if ticket.ready():
                        continue
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise DeadlineExceededError(f"deadline passed while waiting for {key}")
                    await asyncio.wait((woken,), timeout=remaining)
                finally:
                    table.remove_waker(waker)
        finally:
            with table.lock:
                ticket.done()

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (run without the lock, after every change) is true;
        False at ``timeout``. The loop never blocks; cancelled, no waker is left behind."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        table = self._table
        while True:
            woken: asyncio.Future[None] = loop.create_future()
            waker = _waker(loop, woken)
            table.add_waker(waker)  # before the look: no change is missed
            try:
                if predicate():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                await asyncio.wait((woken,), timeout=left)
            finally:
                table.remove_waker(waker)

    def _step(
        self, key: Hashable, spec: LoadSpec | None, deadline: float | None, ticket: _Ticket
    ) -> Lease | None:
        """Under the lock, one look: a lease when READY; else start the load when due, or
        raise when there is nothing to wait for; None: wait for a change and look again."""
        table = self._table
        entry = table.get(key)
        if entry is not None and entry.state is State.READY:
            if not ticket.counted:
                self._count(key, hit=True)  # first: a hook that raises leaves no count
            entry.holders.append(None)
            entry.last_used = time.monotonic()
            return Lease(entry, entry.model, self.give)
        if spec is None:
            raise _not_serving(key, entry)
        entry = table.entry_for(key, spec)
        ticket.wait_on(entry)  # before the lock may be released: not forgotten, not evicted
        if self._loader.start_if_due(entry, spec, deadline):  # may wait for room
            if not ticket.counted:
                self._count(key, hit=False)
                ticket.counted = True
            return None
        if entry.state is State.FAILED and not entry.due():
            assert entry.error is not None
            raise _fresh(entry.error)
        if entry.state in (State.LOADING, State.WARMING) and not ticket.counted:
            table.counters.add("coalesced")
            self._count(key, hit=False)
            ticket.counted = True
        return None

    def _count(self, key: Hashable, *, hit: bool) -> None:
        """Under the lock: a request served from a READY model (hit), or by a load it
        started or joined (miss), in the order the manager admitted them."""
        if hit:
            self._table.counters.hit()
        else:
            self._table.counters.add("misses")
        if self._on_access is not None:
            self._on_access(key, hit)

    def _wait(self, deadline: float | None, what: str) -> None:
        if deadline is None:
            self._table.cond.wait()
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError(f"deadline passed while {what}")
        self._table.cond.wait(remaining)


class _Ticket:
    """One waiting request: whether it was counted, and the entry it waits on (an entry
    with waiters is neither evicted nor forgotten). Changed under the lock."""

    __slots__ = ("counted", "entry")

    def __init__(self) -> None:
        self.counted = False
        self.entry: Entry | None = None

    def wait_on(self, entry: Entry) -> None:
        if self.entry is None:
            self.entry = entry
            entry.waiters += 1

    def ready(self) -> bool:
        return self.entry is not None and self.entry.state is State.READY

    def done(self) -> None:
        if self.entry is not None:
            self.entry.waiters -= 1
            self.entry = None


def _waker(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> Callable[[], None]:
    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, future)

    return wake


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _not_serving(key: Hashable, entry: Entry | None) -> KeepwarmError:
    if entry is None or entry.state in (State.NEW, State.UNLOADED):
        return ModelNotFoundError(f"{key} is not loaded")
    if entry.state is State.FAILED and entry.error is not None:
        return _fresh(entry.error)
    return UnavailableError(f"{key} is {entry.state.value}, not READY")


def _fresh(error: KeepwarmError) -> KeepwarmError:
    """A copy of a recorded error, so that concurrent raisers do not share a traceback."""
    clone = copy.copy(error)
    clone.__cause__ = error.__cause__
    clone.__traceback__ = None
    return clone
