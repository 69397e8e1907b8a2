"""The memory budget: making room under ``max_models`` / ``max_bytes`` by eviction."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable

from keepwarm.core.entry import Entry
from keepwarm.core.events import Event
from keepwarm.core.policy import Candidate, EvictionPolicy
from keepwarm.core.states import RESIDENT, State
from keepwarm.core.table import Table
from keepwarm.errors import InvalidConfigError, ResourceExhaustedError


class Budget:
    """Room in memory, made by evicting idle models the policy values least.

    Accesses reach the policy through ``record`` (lock-free: queued, and handed to the
    policy under the table's lock before it is asked for a victim)."""

    def __init__(
        self,
        table: Table,
        policy: EvictionPolicy,
        *,
        max_models: int | None,
        max_bytes: int | None,
        patience: float,
    ) -> None:
        if max_models is not None and max_models < 1:
            raise InvalidConfigError(f"max_models must be at least 1, got {max_models}")
        if max_bytes is not None and max_bytes < 1:
            raise InvalidConfigError(f"max_bytes must be positive, got {max_bytes}")
        self.max_models = max_models
        self.max_bytes = max_bytes
        self.patience = patience
        self.policy = policy
        self._table = table
        self._accesses: deque[Hashable] = deque()  # appended without a lock

    @property
    def bounded(self) -> bool:
        return self.max_models is not None or self.max_bytes is not None

    def record(self, key: Hashable) -> None:
        """One access to ``key`` (any thread, no lock)."""
        self._accesses.append(key)
        if len(self._accesses) > 1024 and self._table.lock.acquire(blocking=False):
            try:
                self.flush()
            finally:
                self._table.lock.release()

    def flush(self) -> None:
        """Under the lock: hand the queued accesses to the policy, in order."""
        accesses = self._accesses
        while accesses:
            self.policy.record(accesses.popleft())

    def fits(self, entry: Entry) -> bool:
        # Other reservations waiting for room are not counted: they queue behind
        # this one instead of holding each other out.
        nbytes, count = self._table.used(entry)
        return (self.max_models is None or count <= self.max_models) and (
            self.max_bytes is None or nbytes <= self.max_bytes
        )

    def make_room(self, entry: Entry, deadline: float) -> None:
        """Under the lock: evict until ``entry`` fits, waiting for leases up to ``deadline``."""
        if self.max_bytes is not None and entry.nbytes > self.max_bytes:
            raise ResourceExhaustedError(
                f"{entry.key} needs about {entry.nbytes} bytes, more than the whole budget "
                f"(max_bytes={self.max_bytes})"
            )
        table = self._table
        patient_until = min(deadline, time.monotonic() + self.patience)
        # Counted before the first look at the leases: a lease that ends after that look
        # sees the count and wakes this wait (see ``Table.released``).
        table.room_waiters += 1
        try:
            while not self.fits(entry):
                now = time.monotonic()
                if self._evict_one(entry, patient=now < patient_until):
                    continue
                if deadline - now <= 0:
                    raise self._no_room(entry)
                wake = patient_until if now < patient_until else deadline
                table.cond.wait(max(wake - now, 0.001))
        finally:
            table.room_waiters -= 1

    def shrink(self, loaded: Entry) -> None:
        """Under the lock, after a load whose real size exceeded its estimate: evict
        idle others."""
        while self.max_bytes is not None and self._table.used()[0] > self.max_bytes:
            if not self._evict_one(loaded):
                return

    def _no_room(self, entry: Entry) -> ResourceExhaustedError:
        busy = [
            str(e.key)
            for e in self._table.entries()
            if e.state in RESIDENT and (e.holders or e.pinned) and e is not entry
        ]
        return ResourceExhaustedError(
            f"no room to load {entry.key} (about {entry.nbytes} bytes): the budget "
            f"(max_models={self.max_models}, max_bytes={self.max_bytes}) is held by "
            f"models in use or pinned: {', '.join(busy) or 'loads in progress'}; "
            "retry later or raise the budget"
        )

    def _evict_one(self, making_room_for: Entry, *, patient: bool = False) -> bool:
        """Evict the policy's choice among idle, unpinned READY models; False if none.

        ``patient``: do not evict a model the policy values more than another one that is
        busy now (loading, waited for, or leased) and so will soon be an idle, cheaper
        victim; wait for it instead. This keeps a burst of rare models from pushing the
        popular set out. ``patience`` (seconds) bounds that wait.
        """
        self.flush()
        idle, busy = [], []
        for e in self._table.entries():
            if e is making_room_for or e.pinned or e.state not in RESIDENT:
                continue
            candidate = Candidate(e.key, e.nbytes, e.last_used)
            if e.state is State.READY and not e.holders and e.waiters == 0:
                idle.append(candidate)
            elif e.state is not State.DRAINING:
                busy.append(candidate)
        if not idle:
            return False
        choice = self.policy.victim(idle)
        if patient and any(self.policy.prefer_keeping(choice, other) for other in busy):
            return False
        victim = self._table.get(choice.key)
        assert victim is not None
        self._table.counters.add("evictions")
        self._table.events.emit(Event("evicted", victim.key, nbytes=victim.nbytes))
        self._table.drain(victim, f"evicted to make room for {making_room_for.key}")
        return True
