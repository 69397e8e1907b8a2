"""The Manager: which versions are loaded, their lifecycle, and the memory budget.

One lock guards the table; loads, warmups and unloads run outside it, so a slow load
of one model never blocks callers of another. Every state change goes through
``_set_state``, which enforces the table in ``core.states``.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

from keepwarm.core.backoff import Backoff
from keepwarm.core.entry import Entry, LoadSpec
from keepwarm.core.events import Event, EventBus
from keepwarm.core.lease import Lease
from keepwarm.core.policy import Candidate, EvictionPolicy, FrequencyPolicy
from keepwarm.core.reaper import Reaper
from keepwarm.core.states import RESIDENT, State, check
from keepwarm.errors import (
    DeadlineExceededError,
    KeepwarmError,
    ModelLoadError,
    ModelNotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)

# A load that has not returned after this long is marked FAILED (it may still return later).
DEFAULT_LOAD_TIMEOUT = 300.0
# How long a load waits for leased models to free room in the budget.
DEFAULT_BUDGET_TIMEOUT = 30.0


class Manager:
    def __init__(
        self,
        *,
        max_models: int | None = None,
        max_bytes: int | None = None,
        policy: EvictionPolicy | None = None,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        budget_timeout: float = DEFAULT_BUDGET_TIMEOUT,
        backoff: Backoff | None = None,
        events: EventBus | None = None,
        on_access: Callable[[Hashable, bool], None] | None = None,
    ) -> None:
        if max_models is not None and max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_models = max_models
        self.max_bytes = max_bytes
        self.policy: EvictionPolicy = policy or FrequencyPolicy()
        self.load_timeout = load_timeout
        self.budget_timeout = budget_timeout
        self.backoff = backoff or Backoff()
        self.events = events or EventBus()
        self._on_access = on_access
        self._cond = threading.Condition(threading.Lock())
        self._entries: dict[Hashable, Entry] = {}
        self._reaper = Reaper(self.events)
        self._closed = False
        self.counters = {"hits": 0, "misses": 0, "loads": 0, "coalesced": 0,
                         "evictions": 0, "failures": 0}
        self.load_seconds = 0.0

    # ----------------------------------------------------------------- requests

    def acquire(self, key: Hashable, spec: LoadSpec | None = None, *,
                timeout: float | None = None) -> Lease:
        """A lease on ``key``'s loaded model, loading it first when ``spec`` is given.

        Without ``spec`` (eager mode) only a ``READY`` model is leased. ``timeout`` bounds
        the whole wait, loading included.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        counted = False
        waiting: Entry | None = None  # the entry this request waits on (not evictable)
        with self._cond:
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
                    if state in (None, State.NEW, State.UNLOADED) or (
                            state is State.FAILED and entry.retry_due()):
                        if not entry.reserving:
                            if not counted:
                                self._count_access(key, hit=False)
                                counted = True
                            self._reserve_and_start(entry, deadline)  # may wait for room
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
    def lease(self, key: Hashable, spec: LoadSpec | None = None, *,
              timeout: float | None = None) -> Iterator[Any]:
        lease = self.acquire(key, spec, timeout=timeout)
        try:
            yield lease.model
        finally:
            lease.release()

    def _release(self, entry: Entry) -> None:
        with self._cond:
            entry.leases -= 1
            if entry.leases == 0:
                if entry.state is State.DRAINING:
                    self._finish_unload(entry, "drained")
                self._cond.notify_all()

    # ------------------------------------------------------------ eager control

    def ensure(self, key: Hashable, spec: LoadSpec, *, pinned: bool = False) -> State:
        """Start loading ``key`` unless it is loaded, loading, or backing off. Never blocks."""
        with self._cond:
            entry = self._entry_for(key, spec)
            entry.pinned = pinned
            if entry.spec is not spec and entry.state in (State.NEW, State.UNLOADED,
                                                          State.FAILED):
                entry.spec = spec
            if (entry.state in (State.NEW, State.UNLOADED)
                    or (entry.state is State.FAILED and entry.retry_due())) \
                    and not entry.reserving:
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

    def forget(self, key: Hashable) -> None:
        """Drop a key that is not resident from the table (its history goes with it)."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is not None and entry.state not in RESIDENT and not entry.stuck:
                del self._entries[key]

    def wait_state(self, key: Hashable, states: set[State], timeout: float) -> State | None:
        """Wait until ``key`` is in one of ``states``; returns its state then (or at timeout)."""
        self.wait_for(lambda: self.state(key) in states, timeout)
        return self.state(key)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (re-checked at every state change) is true."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def close(self, drain_timeout: float = 30.0) -> None:
        """Drain every version (waiting up to ``drain_timeout`` for leases), then unload."""
        deadline = time.monotonic() + drain_timeout
        with self._cond:
            self._closed = True
            for entry in list(self._entries.values()):
                if entry.state is State.READY:
                    self._drain(entry, "shutdown")
            while any(e.leases for e in self._entries.values() if e.state is State.DRAINING):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            for entry in self._entries.values():
                if entry.state is State.DRAINING:
                    self._finish_unload(entry, "shutdown (drain timeout)")
        self._reaper.stop()

    # ------------------------------------------------------------------ queries

    def state(self, key: Hashable) -> State | None:
        entry = self._entries.get(key)
        return entry.state if entry is not None else None

    def entry(self, key: Hashable) -> Entry | None:
        return self._entries.get(key)

    def snapshot(self) -> dict[Hashable, dict[str, Any]]:
        with self._cond:
            return {key: e.describe() for key, e in self._entries.items()}

    def used(self, reserving: Entry | None = None) -> tuple[int, int]:
        """Bytes held or reserved, and the number of resident models (with ``reserving``)."""
        resident = [e for e in self._entries.values()
                    if e.state in RESIDENT or e.stuck or e is reserving]
        return sum(e.nbytes for e in resident), len(resident)

    # ---------------------------------------------------------------- internals

    def _count_access(self, key: Hashable, *, hit: bool) -> None:
        self.counters["hits" if hit else "misses"] += 1
        self.policy.record(key)
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

    def _set_state(self, entry: Entry, target: State, reason: str | None = None) -> None:
        entry.state = check(entry.state, target)
        entry.reason = reason
        entry.changed_at = time.monotonic()
        self._cond.notify_all()
        self.events.emit(Event("state", entry.key, state=target, reason=reason,
                               nbytes=entry.nbytes))

    def _reserve_and_start(self, entry: Entry, deadline: float | None) -> None:
        """Make room for ``entry`` in the budget (waiting for leases up to a deadline), then
        start its load on a thread of its own. Called with the lock held."""
        if self._closed:
            raise UnavailableError("the model manager is shutting down")
        entry.reserving = True
        try:
            estimate = entry.spec.estimate_nbytes()
            entry.nbytes = estimate
            budget_deadline = time.monotonic() + self.budget_timeout
            if deadline is not None:
                budget_deadline = min(budget_deadline, deadline)
            self._make_room(entry, budget_deadline)
        except BaseException:
            entry.reserving = False
            entry.nbytes = 0
            self._cond.notify_all()
            raise
        entry.reserving = False
        entry.attempt += 1
        self.counters["loads"] += 1
        self._set_state(entry, State.LOADING)
        attempt = entry.attempt
        threading.Thread(target=self._run_load, args=(entry, attempt),
                         name=f"keepwarm-load-{entry.key}", daemon=True).start()
        timer = threading.Timer(self.load_timeout, self._on_timeout, (entry, attempt))
        timer.daemon = True
        timer.start()
        entry.timer = timer

    def _fits(self, entry: Entry) -> bool:
        # Other reservations waiting for room are not counted: they queue behind
        # this one instead of holding each other out.
        nbytes, count = self.used(entry)
        return ((self.max_models is None or count <= self.max_models)
                and (self.max_bytes is None or nbytes <= self.max_bytes))

    def _make_room(self, entry: Entry, deadline: float) -> None:
        if self.max_bytes is not None and entry.nbytes > self.max_bytes:
            raise ResourceExhaustedError(
                f"{entry.key} needs about {entry.nbytes} bytes, more than the whole budget "
                f"(max_bytes={self.max_bytes})")
        while not self._fits(entry):
            remaining = deadline - time.monotonic()
            if self._evict_one(entry, patient=remaining > 0):
                continue
            if remaining <= 0:
                busy = [str(e.key) for e in self._entries.values()
                        if e.state in RESIDENT and (e.leases or e.pinned) and e is not entry]
                raise ResourceExhaustedError(
                    f"no room to load {entry.key} (about {entry.nbytes} bytes): the budget "
                    f"(max_models={self.max_models}, max_bytes={self.max_bytes}) is held by "
                    f"models in use or pinned: {', '.join(busy) or 'loads in progress'}; "
                    "retry later or raise the budget")
            self._cond.wait(remaining)

    def _run_load(self, entry: Entry, attempt: int) -> None:
        started = time.perf_counter()
        model: Any = None
        try:
            model = entry.spec.load()
            with self._cond:
                if not _current(entry, attempt, State.LOADING):
                    raise _Superseded
                entry.nbytes = int(getattr(model, "nbytes", entry.nbytes) or entry.nbytes)
                self._set_state(entry, State.WARMING)
            entry.spec.warmup(model)
            with self._cond:
                if not _current(entry, attempt, State.WARMING):
                    raise _Superseded
                entry.model = model
                entry.load_seconds = time.perf_counter() - started
                self.load_seconds += entry.load_seconds
                entry.failures = 0
                entry.error = None
                entry.last_used = time.monotonic()
                entry.cancel_timer()
                self._set_state(entry, State.READY)
                self._shrink_to_budget(entry)
        except _Superseded:
            self._reaper.close(model, entry, "a timed-out load returned", self._after_stuck)
        except BaseException as exc:  # every failure becomes a typed, recorded error
            error = exc if isinstance(exc, KeepwarmError) else ModelLoadError(
                f"loading {entry.spec.description} failed: {type(exc).__name__}: {exc}",
                format=getattr(entry.spec, "format", None))
            if error is not exc:
                error.__cause__ = exc
            with self._cond:
                if entry.attempt == attempt and entry.state in (State.LOADING, State.WARMING):
                    self._fail(entry, error)
                elif entry.stuck:
                    entry.stuck = False
                    entry.nbytes = 0
                    self._cond.notify_all()
            if model is not None:
                self._reaper.close(model, entry, "warmup failed", None)

    def _after_stuck(self, entry: Entry) -> None:
        with self._cond:
            entry.stuck = False
            if entry.state is not State.READY:
                entry.nbytes = 0
            self._cond.notify_all()

    def _on_timeout(self, entry: Entry, attempt: int) -> None:
        with self._cond:
            if entry.attempt == attempt and entry.state in (State.LOADING, State.WARMING):
                entry.stuck = True
                self._fail(entry, ModelLoadError(
                    f"loading {entry.spec.description} did not finish within "
                    f"{self.load_timeout:g} s (timeout); it is not retried until that load "
                    "returns", format=getattr(entry.spec, "format", None)))

    def _fail(self, entry: Entry, error: KeepwarmError) -> None:
        entry.cancel_timer()
        entry.error = error
        entry.failures += 1
        entry.retry_at = time.monotonic() + self.backoff.delay(entry.failures)
        self.counters["failures"] += 1
        if not entry.stuck:
            entry.nbytes = 0
        self._set_state(entry, State.FAILED, error.message)

    def _shrink_to_budget(self, loaded: Entry) -> None:
        """After a load whose real size exceeded its estimate, evict idle others."""
        while self.max_bytes is not None and self.used()[0] > self.max_bytes:
            if not self._evict_one(loaded):
                return

    def _evict_one(self, making_room_for: Entry, *, patient: bool = False) -> bool:
        """Evict the policy's choice among idle, unpinned READY models; False if none.

        ``patient``: while other loads are in flight, do not evict a model the policy values
        more than the newcomer; those loads will soon offer cheaper victims (this keeps a
        burst of rare models from pushing the popular set out).
        """
        candidates = [Candidate(e.key, e.nbytes, e.last_used)
                      for e in self._entries.values()
                      if e.state is State.READY and e.leases == 0 and e.waiters == 0
                      and not e.pinned and e is not making_room_for]
        if not candidates:
            return False
        choice = self.policy.victim(candidates)
        if patient and any(e.state in (State.LOADING, State.WARMING)
                           for e in self._entries.values() if e is not making_room_for):
            newcomer = Candidate(making_room_for.key, making_room_for.nbytes, time.monotonic())
            if self.policy.prefer_keeping(choice, newcomer):
                return False
        victim = self._entries[choice.key]
        self.counters["evictions"] += 1
        self.events.emit(Event("evicted", victim.key, nbytes=victim.nbytes))
        self._drain(victim, f"evicted to make room for {making_room_for.key}")
        return True

    def _drain(self, entry: Entry, reason: str) -> None:
        self._set_state(entry, State.DRAINING, reason)
        if entry.leases == 0:
            self._finish_unload(entry, reason)

    def _finish_unload(self, entry: Entry, reason: str) -> None:
        model, entry.model = entry.model, None
        entry.nbytes = 0
        self._set_state(entry, State.UNLOADED, reason)
        if model is not None:
            self._reaper.close(model, entry, reason, None)


class _Superseded(Exception):
    """A load returned after it was timed out or replaced; its model is discarded."""


def _fresh(error: KeepwarmError) -> KeepwarmError:
    """A copy of a recorded error, so that concurrent raisers do not share a traceback."""
    clone = copy.copy(error)
    clone.__cause__ = error.__cause__
    clone.__traceback__ = None
    return clone


def _current(entry: Entry, attempt: int, state: State) -> bool:
    """True when ``entry`` is still in ``state`` for the load ``attempt`` (not timed out)."""
    return entry.attempt == attempt and entry.state is state
