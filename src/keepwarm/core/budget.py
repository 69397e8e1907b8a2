"""The memory budget: making room under ``max_models`` / ``max_bytes`` by eviction."""

from __future__ import annotations

import time

from keepwarm.core.entry import Entry
from keepwarm.core.events import Event
from keepwarm.core.policy import Candidate
from keepwarm.core.states import RESIDENT, State
from keepwarm.core.table import ManagerTable
from keepwarm.errors import ResourceExhaustedError


class Budget(ManagerTable):
    def _fits(self, entry: Entry) -> bool:
        # Other reservations waiting for room are not counted: they queue behind
        # this one instead of holding each other out.
        nbytes, count = self.used(entry)
        return (self.max_models is None or count <= self.max_models) and (
            self.max_bytes is None or nbytes <= self.max_bytes
        )

    def _make_room(self, entry: Entry, deadline: float) -> None:
        if self.max_bytes is not None and entry.nbytes > self.max_bytes:
            raise ResourceExhaustedError(
                f"{entry.key} needs about {entry.nbytes} bytes, more than the whole budget "
                f"(max_bytes={self.max_bytes})"
            )
        patient_until = min(deadline, time.monotonic() + self.patience)
        while not self._fits(entry):
            now = time.monotonic()
            remaining = deadline - now
            if self._evict_one(entry, patient=now < patient_until):
                continue
            if remaining <= 0:
                busy = [
                    str(e.key)
                    for e in self._entries.values()
                    if e.state in RESIDENT and (e.leases or e.pinned) and e is not entry
                ]
                raise ResourceExhaustedError(
                    f"no room to load {entry.key} (about {entry.nbytes} bytes): the budget "
                    f"(max_models={self.max_models}, max_bytes={self.max_bytes}) is held by "
                    f"models in use or pinned: {', '.join(busy) or 'loads in progress'}; "
                    "retry later or raise the budget"
                )
            wake = patient_until if now < patient_until else deadline
            self._room_waiters += 1
            try:
                self._cond.wait(max(wake - now, 0.001))
            finally:
                self._room_waiters -= 1

    def _shrink_to_budget(self, loaded: Entry) -> None:
        """After a load whose real size exceeded its estimate, evict idle others."""
        while self.max_bytes is not None and self.used()[0] > self.max_bytes:
            if not self._evict_one(loaded):
                return

    def _evict_one(self, making_room_for: Entry, *, patient: bool = False) -> bool:
        """Evict the policy's choice among idle, unpinned READY models; False if none.

        ``patient``: do not evict a model the policy values more than another one that is
        busy now (loading, waited for, or leased) and so will soon be an idle, cheaper
        victim; wait for it instead. This keeps a burst of rare models from pushing the
        popular set out. ``patience`` (seconds) bounds that wait.
        """
        idle, busy = [], []
        for e in self._entries.values():
            if e is making_room_for or e.pinned or e.state not in RESIDENT:
                continue
            candidate = Candidate(e.key, e.nbytes, e.last_used)
            if e.state is State.READY and e.leases == 0 and e.waiters == 0:
                idle.append(candidate)
            elif e.state is not State.DRAINING:
                busy.append(candidate)
        if not idle:
            return False
        choice = self.policy.victim(idle)
        if patient and any(self.policy.prefer_keeping(choice, other) for other in busy):
            return False
        victim = self._entries[choice.key]
        self.counters["evictions"] += 1
        self.events.emit(Event("evicted", victim.key, nbytes=victim.nbytes))
        self._drain(victim, f"evicted to make room for {making_room_for.key}")
        return True
