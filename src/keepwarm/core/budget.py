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
        while not self._fits(entry):
            remaining = deadline - time.monotonic()
            if self._evict_one(entry, patient=remaining > 0):
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
            self._cond.wait(remaining)

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
        candidates = [
            Candidate(e.key, e.nbytes, e.last_used)
            for e in self._entries.values()
            if e.state is State.READY
            and e.leases == 0
            and e.waiters == 0
            and not e.pinned
            and e is not making_room_for
        ]
        if not candidates:
            return False
        choice = self.policy.victim(candidates)
        if patient and any(
            e.state in (State.LOADING, State.WARMING)
            for e in self._entries.values()
            if e is not making_room_for
        ):
            newcomer = Candidate(making_room_for.key, making_room_for.nbytes, time.monotonic())
            if self.policy.prefer_keeping(choice, newcomer):
                return False
        victim = self._entries[choice.key]
        self.counters["evictions"] += 1
        self.events.emit(Event("evicted", victim.key, nbytes=victim.nbytes))
        self._drain(victim, f"evicted to make room for {making_room_for.key}")
        return True
