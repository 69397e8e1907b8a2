"""The Manager: which versions are loaded, their lifecycle, and the memory budget.

One lock guards the table; loads, warmups and unloads run outside it, so a slow load
of one model never blocks callers of another. The layers: ``table`` (state and
transitions), ``budget`` (eviction), ``loader`` (load threads), and here the requests.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

from keepwarm.core.entry import Entry, LoadSpec
from keepwarm.core.lease import Lease
from keepwarm.core.loader import Loader
from keepwarm.core.states import RESIDENT, State
from keepwarm.errors import (
    DeadlineExceededError,
    KeepwarmError,
    ModelNotFoundError,
    UnavailableError,
)
from keepwarm.settings import LoadingSettings

__all__ = ["Manager"]


class Manager(Loader):
    """See the module docstring; ``ManagerTable.__init__`` takes the settings."""

    # ----------------------------------------------------------------- requests

    def acquire(
        self, key: Hashable, spec: LoadSpec | None = None, *, timeout: float | None = None
    ) -> Lease:
        """A lease on ``key``'s loaded model, loading it first when ``spec`` is given.

        Without ``spec`` (eager mode) only a ``READY`` model is leased. ``timeout`` bounds
        the whole wait, loading included.
        """
        with self._lock:  # the hot path: a READY model
            entry = self._entries.get(key)
            if entry is not None and entry.state is State.READY:
                self.policy.record(key)
                entry.leases += 1
                entry.last_used = time.monotonic()
                self._count_access(key, hit=True)
                return Lease(self, entry)
        return self._acquire_slow(key, spec, timeout)

    def _acquire_slow(self, key: Hashable, spec: LoadSpec | None, timeout: float | None) -> Lease:
        deadline = None if timeout is None else time.monotonic() + timeout
        counted = False  # counted as served: a hit, a load, or joining a load
        waiting: Entry | None = None  # the entry this request waits on (not evictable)
        with self._cond:
            self.policy.record(key)  # the policy counts arrivals, for the victim choice
            try:
                while True:
                    entry = self._entries.get(key)
                    state = entry.state if entry is not None else None
                    if entry is not None and state is State.READY:
                        entry.leases += 1
                        entry.last_used = time.monotonic()
                        if not counted:
                            self._count_access(key, hit=True)
                        return Lease(self, entry)
                    if spec is None:
                        raise self._not_serving(key, entry)
                    entry = self._entry_for(key, spec)
                    if waiting is None:
                        waiting = entry
                        entry.waiters += 1
                    if state in (None, State.NEW, State.UNLOADED, State.FAILED):
                        entry.set_spec(spec)  # a new spec (say, a fixed config) retries at once
                    if state in (None, State.NEW, State.UNLOADED) or (
                        state is State.FAILED and entry.retry_due()
                    ):
                        if not entry.reserving:
                            if not entry.estimate_known():
                                self._estimate_off_lock(entry)
                                continue  # the table may have changed meanwhile
                            self._reserve_and_start(entry, deadline)  # may wait for room
                            if not counted:
                                self._count_access(key, hit=False)
                                counted = True
                            continue
                    elif state is State.FAILED:
                        assert entry.error is not None
                        raise _fresh(entry.error)
                    elif state in (State.LOADING, State.WARMING) and not counted:
                        self.counters["coalesced"] += 1
                        self._count_access(key, hit=False)
                        counted = True
                    self._wait(deadline, f"waiting for {key} to load")
            finally:
                if waiting is not None:
                    waiting.waiters -= 1

    @contextmanager
    def lease(
        self, key: Hashable, spec: LoadSpec | None = None, *, timeout: float | None = None
    ) -> Iterator[Any]:
        lease = self.acquire(key, spec, timeout=timeout)
        try:
            yield lease.model
        finally:
            lease.release()

    def _release(self, entry: Entry) -> None:
        with self._lock:
            entry.leases -= 1
            if entry.leases == 0:
                if entry.state is State.DRAINING:
                    self._finish_unload(entry, "drained")  # notifies
                elif self._room_waiters:
                    self._cond.notify_all()  # an idle model is a candidate for eviction now

    # ------------------------------------------------------------ eager control

    def ensure(self, key: Hashable, spec: LoadSpec, *, pinned: bool = False) -> State:
        """Start loading ``key`` unless it is loaded, loading, or backing off. Never blocks."""
        with self._cond:
            entry = self._entry_for(key, spec)
            entry.pinned = pinned
            if entry.state in (State.NEW, State.UNLOADED, State.FAILED):
                entry.set_spec(spec)
            if (
                entry.state in (State.NEW, State.UNLOADED)
                or (entry.state is State.FAILED and entry.retry_due())
            ) and not entry.reserving:
                if not entry.estimate_known():
                    self._estimate_off_lock(entry)
                    if entry.reserving or entry.state not in (
                        State.NEW,
                        State.UNLOADED,
                        State.FAILED,
                    ):
                        return entry.state  # someone else started it meanwhile
                self._reserve_and_start(entry, time.monotonic())
            return entry.state

    def unload(self, key: Hashable, reason: str = "unloaded") -> bool:
        """Stop new leases on ``key``; it unloads when its leases reach zero."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is None or entry.state is not State.READY:
                return False
            self._drain(entry, reason)
            return True

    def forget(self, key: Hashable) -> bool:
        """Drop ``key`` from the table (its history goes with it) unless it holds memory, a
        load or a waiting request. True when ``key`` is not in the table afterwards."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is None:
                return True
            if entry.state in RESIDENT or entry.stuck or entry.reserving or entry.waiters:
                return False
            del self._entries[key]
            self._cond.notify_all()  # waiters on the table see it gone
            return True

    def wait_state(self, key: Hashable, states: set[State], timeout: float) -> State | None:
        """Wait until ``key`` is in one of ``states``; returns its state then (or at timeout)."""
        self.wait_for(lambda: self.state(key) in states, timeout)
        return self.state(key)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (re-checked at every state change) is true."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def close(self, drain_timeout: float = LoadingSettings.drain_timeout) -> None:
        """Refuse new loads, drain every version (waiting up to ``drain_timeout`` for
        leases and for loads in flight), then unload everything and stop the threads."""
        deadline = time.monotonic() + drain_timeout
        with self._cond:
            self._closed = True
            self._cond.notify_all()  # loads waiting for room give up
            for entry in list(self._entries.values()):
                if entry.state is State.READY:
                    self._drain(entry, "shutdown")

            def busy() -> bool:
                return any(
                    (e.state is State.DRAINING and e.leases)
                    or e.state in (State.LOADING, State.WARMING)
                    or e.reserving
                    for e in self._entries.values()
                )

            self._cond.wait_for(lambda: not busy(), max(0.0, deadline - time.monotonic()))
            for entry in self._entries.values():
                entry.cancel_timer()
                if entry.state is State.DRAINING:
                    self._finish_unload(entry, "shutdown (drain timeout)")
        self._reaper.stop()
        if self._owns_events:
            self.events.close()

    # ---------------------------------------------------------------- internals

    def _count_access(self, key: Hashable, *, hit: bool) -> None:
        """A request served: from a READY model (hit), or by a load it started or joined
        (miss). Counted when the cache admits it, so ``on_access`` sees the order in which
        the cache really served requests (a request waiting for room is not admitted)."""
        self.counters["hits" if hit else "misses"] += 1
        if self._on_access is not None:
            self._on_access(key, hit)

    def _entry_for(self, key: Hashable, spec: LoadSpec) -> Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Entry(key, spec)
        return entry

    def _not_serving(self, key: Hashable, entry: Entry | None) -> KeepwarmError:
        if entry is None or entry.state in (State.NEW, State.UNLOADED):
            return ModelNotFoundError(f"{key} is not loaded")
        if entry.state is State.FAILED and entry.error is not None:
            return _fresh(entry.error)
        return UnavailableError(f"{key} is {entry.state.value}, not READY")

    def _wait(self, deadline: float | None, what: str) -> None:
        if deadline is None:
            self._cond.wait()
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError(f"deadline passed while {what}")
        self._cond.wait(remaining)


def _fresh(error: KeepwarmError) -> KeepwarmError:
    """A copy of a recorded error, so that concurrent raisers do not share a traceback."""
    clone = copy.copy(error)
    clone.__cause__ = error.__cause__
    clone.__traceback__ = None
    return clone
