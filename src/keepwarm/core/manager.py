"""The Manager: which versions are loaded, their lifecycle, and the memory budget.

A composition of four collaborators with narrow interfaces:

- ``Table`` (``core.table``): the entries, the one lock, the transitions;
- ``Budget`` (``core.budget``): room under ``max_models`` / ``max_bytes``, by eviction;
- ``Loader`` (``core.loader``): the one place a load starts, its thread, timeout, warmup
  and backoff;
- ``Requests`` (``core.requests``): leases, lock-free for a READY key.

Loads, warmups, sizing and unloads run outside the lock, so a slow load of one model never
blocks callers of another, and a request for a READY model takes no lock at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

from keepwarm.core.backoff import Backoff
from keepwarm.core.budget import Budget
from keepwarm.core.entry import Entry, EntryStatus, LoadSpec
from keepwarm.core.events import EventBus
from keepwarm.core.lease import Lease
from keepwarm.core.loader import Loader
from keepwarm.core.policy import EvictionPolicy, FrequencyPolicy
from keepwarm.core.reaper import Reaper
from keepwarm.core.requests import AccessHook, Requests
from keepwarm.core.states import State
from keepwarm.core.table import Table, Watcher
from keepwarm.settings import BudgetSettings, LoadingSettings, Settings

__all__ = ["Lease", "Manager"]


class Manager:
    def __init__(
        self,
        *,
        max_models: int | None = None,
        max_bytes: int | None = None,
        policy: EvictionPolicy | None = None,
        load_timeout: float = LoadingSettings.load_timeout,
        budget_timeout: float = BudgetSettings.budget_timeout,
        patience: float = BudgetSettings.patience,
        backoff: Backoff | None = None,
        events: EventBus | None = None,
        on_access: AccessHook | None = None,
    ) -> None:
        self._owns_events = events is None
        self.events = events or EventBus()
        self._reaper = Reaper(self.events)
        self._table = Table(self.events, self._reaper)
        self._budget = Budget(
            self._table,
            policy or FrequencyPolicy(),
            max_models=max_models,
            max_bytes=max_bytes,
            patience=patience,
        )
        self._loader = Loader(
            self._table,
            self._budget,
            self._reaper,
            load_timeout=load_timeout,
            budget_timeout=budget_timeout,
            backoff=backoff or Backoff(),
        )
        self._requests = Requests(self._table, self._budget, self._loader, on_access)
        # The request side's lock-free calls, bound once (see ``Requests``):
        #: ``try_acquire(key)``: a lease when ``key`` is READY, else None; never blocks.
        self.try_acquire = self._requests.try_acquire
        #: ``try_lease(entry, model=None)``: a lease on ``entry`` (from ``entry()`` or a
        #: watcher) when READY, handing out ``model`` (the loaded model by default).
        self.try_lease = self._requests.try_lease
        #: ``take(entry) -> bool`` counts a lease on a READY entry; ``give(entry)`` ends it.
        self.take = self._requests.take
        self.give = self._requests.give
        #: ``get(key)``: the entry of ``key`` or None (a dict read, no lock).
        self.get = self._table.get

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        policy: EvictionPolicy | None = None,
        on_access: AccessHook | None = None,
    ) -> Manager:
        """A manager with the budget and loading sections of ``settings``."""
        budget, loading = settings.budget, settings.loading
        return cls(
            max_models=budget.max_models,
            max_bytes=budget.max_bytes,
            policy=policy,
            load_timeout=loading.load_timeout,
            budget_timeout=budget.budget_timeout,
            patience=budget.patience,
            backoff=Backoff(loading.retry_initial, loading.retry_max),
            on_access=on_access,
        )

    # ------------------------------------------------------------------ settings

    @property
    def max_models(self) -> int | None:
        return self._budget.max_models

    @property
    def max_bytes(self) -> int | None:
        return self._budget.max_bytes

    @property
    def policy(self) -> EvictionPolicy:
        return self._budget.policy

    @property
    def patience(self) -> float:
        return self._budget.patience

    @property
    def load_timeout(self) -> float:
        return self._loader.load_timeout

    @property
    def budget_timeout(self) -> float:
        return self._loader.budget_timeout

    @property
    def backoff(self) -> Backoff:
        return self._loader.backoff

    @backoff.setter
    def backoff(self, backoff: Backoff) -> None:
        self._loader.backoff = backoff

    # ------------------------------------------------------------------ queries

    @property
    def counters(self) -> dict[str, int]:
        """hits, misses, loads, coalesced, evictions, failures (a copy)."""
        return self._table.counters.as_dict()

    @property
    def load_seconds(self) -> float:
        return self._loader.load_seconds

    def state(self, key: Hashable) -> State | None:
        entry = self._table.get(key)
        return entry.state if entry is not None else None

    def entry(self, key: Hashable) -> Entry | None:
        return self._table.get(key)

    def snapshot(self) -> dict[Hashable, EntryStatus]:
        return self._table.snapshot()

    def used(self) -> tuple[int, int]:
        """Bytes held or reserved, and the number of resident models."""
        with self._table.lock:
            return self._table.used()

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        """Call ``watcher(entry)`` after every transition, under the lock (see
        ``Table.watch``); returns the function that stops it."""
        return self._table.watch(watcher)

    def awaiting(self) -> int:
        """How many ``acquire_async`` / ``wait_for_async`` calls wait for a change now."""
        return self._table.wakers()

    def changed(self) -> None:
        """Wake every request waiting for a change (say, a new listing was published)."""
        with self._table.lock:
            self._table.changed()

    def wait_state(self, key: Hashable, states: set[State], timeout: float) -> State | None:
        """Wait until ``key`` is in one of ``states``; returns its state then (or at timeout)."""
        self.wait_for(lambda: self.state(key) in states, timeout)
        return self.state(key)

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``predicate()`` (re-checked at every change) is true."""
        with self._table.cond:
            return self._table.cond.wait_for(predicate, timeout)

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """``wait_for`` for an event loop: ``predicate`` runs without the lock."""
        return await self._requests.wait_for_async(predicate, timeout)

    # ------------------------------------------------------------------ requests

    def acquire(
        self, key: Hashable, spec: LoadSpec | None = None, *, timeout: float | None = None
    ) -> Lease:
        """A lease on ``key``'s loaded model, loading it first when ``spec`` is given.

        Without ``spec`` (eager mode) only a ``READY`` model is leased. ``timeout`` bounds
        the whole wait, loading included.
        """
        return self._requests.acquire(key, spec, timeout)

    async def acquire_async(
        self, key: Hashable, spec: LoadSpec | None = None, *, timeout: float | None = None
    ) -> Lease:
        """``acquire`` that never blocks the event loop (see ``Requests.acquire_async``)."""
        return await self._requests.acquire_async(key, spec, timeout)

    @contextmanager
    def lease(
        self, key: Hashable, spec: LoadSpec | None = None, *, timeout: float | None = None
    ) -> Iterator[Any]:
        lease = self.acquire(key, spec, timeout=timeout)
        try:
            yield lease.model
        finally:
            lease.release()

    # ------------------------------------------------------------ eager control

    def ensure(self, key: Hashable, spec: LoadSpec, *, pinned: bool = False) -> State:
        """Start loading ``key`` unless it is loaded, loading, or backing off. Never waits
        for room in the budget (``ResourceExhaustedError`` when there is none now)."""
        with self._table.lock:
            entry = self._table.entry_for(key, spec)
            entry.pinned = pinned
            self._loader.start_if_due(entry, spec, time.monotonic())
            return entry.state

    def unload(self, key: Hashable, reason: str = "unloaded") -> bool:
        """Stop new leases on ``key``; it unloads when its leases reach zero."""
        with self._table.lock:
            entry = self._table.get(key)
            if entry is None or entry.state is not State.READY:
                return False
            self._table.drain(entry, reason)
            return True

    def forget(self, key: Hashable) -> bool:
        """Drop ``key`` from the table (its history goes with it) unless it holds memory, a
        load or a waiting request. True when ``key`` is not in the table afterwards."""
        return self._table.forget(key)

    def close(self, drain_timeout: float = LoadingSettings.drain_timeout) -> None:
        """Refuse new loads, drain every version (waiting up to ``drain_timeout`` for
        leases and for loads in flight), then unload everything and stop the threads."""
        deadline = time.monotonic() + drain_timeout
        table = self._table
        with table.lock:
            table.closed = True
            table.changed()  # loads waiting for room give up
            for entry in table.entries():
                if entry.state is State.READY:
                    table.drain(entry, "shutdown")

            def busy() -> bool:
                return any(
                    (e.state is State.DRAINING and e.holders)
                    or e.state in (State.LOADING, State.WARMING)
                    or e.reserving
                    for e in table.entries()
                )

            table.cond.wait_for(lambda: not busy(), max(0.0, deadline - time.monotonic()))
            for entry in table.entries():
                entry.cancel_timer()
                if entry.state is State.DRAINING:
                    table.finish_unload(entry, "shutdown (drain timeout)")
        self._reaper.stop()
        if self._owns_events:
            self.events.close()
