"""The manager's table and the transitions every other part goes through.

One lock (``_cond``) guards the table; every state change goes through ``_set_state``,
which enforces the table in ``core.states`` and emits the event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from keepwarm.core.backoff import Backoff
from keepwarm.core.entry import Entry
from keepwarm.core.events import Event, EventBus
from keepwarm.core.policy import EvictionPolicy, FrequencyPolicy
from keepwarm.core.reaper import Reaper
from keepwarm.core.states import RESIDENT, State, check
from keepwarm.errors import InvalidConfigError
from keepwarm.settings import BudgetSettings, LoadingSettings


class ManagerTable:
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
        on_access: Callable[[Hashable, bool], None] | None = None,
    ) -> None:
        if max_models is not None and max_models < 1:
            raise InvalidConfigError(f"max_models must be at least 1, got {max_models}")
        if max_bytes is not None and max_bytes < 1:
            raise InvalidConfigError(f"max_bytes must be positive, got {max_bytes}")
        self.max_models = max_models
        self.max_bytes = max_bytes
        self.policy: EvictionPolicy = policy or FrequencyPolicy()
        self.load_timeout = load_timeout
        self.budget_timeout = budget_timeout
        self.patience = patience
        self.backoff = backoff or Backoff()
        self._owns_events = events is None
        self.events = events or EventBus()
        self._on_access = on_access
        self._lock = threading.Lock()  # fast paths take it directly; waits use _cond
        self._cond = threading.Condition(self._lock)
        self._entries: dict[Hashable, Entry] = {}
        self._reaper = Reaper(self.events)
        self._closed = False
        self._room_waiters = 0  # loads waiting in Budget._make_room for a lease to end
        self.counters = {
            "hits": 0,
            "misses": 0,
            "loads": 0,
            "coalesced": 0,
            "evictions": 0,
            "failures": 0,
        }
        self.load_seconds = 0.0

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
        resident = [
            e for e in self._entries.values() if e.state in RESIDENT or e.stuck or e is reserving
        ]
        return sum(e.nbytes for e in resident), len(resident)

    def _estimate_off_lock(self, entry: Entry) -> None:
        """Size ``entry``'s files for the budget with the lock released (it walks a
        directory); called with the lock held, returns with it held."""
        spec = entry.spec
        self._lock.release()
        try:
            nbytes = spec.estimate_nbytes()
        finally:
            self._lock.acquire()
        entry.estimate = (spec, nbytes)

    # ------------------------------------------------------------- transitions

    def _set_state(self, entry: Entry, target: State, reason: str | None = None) -> None:
        entry.state = check(entry.state, target)
        entry.reason = reason
        self._cond.notify_all()
        self.events.emit(
            Event("state", entry.key, state=target, reason=reason, nbytes=entry.nbytes)
        )

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
