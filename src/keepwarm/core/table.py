"""The manager's table: the entries, the one lock, and the transitions.

Every state change goes through ``set_state``, which enforces the table in
``core.states``, wakes the threads waiting on the lock, tells the watchers (synchronously,
under the lock: a serving map is republished before the change is visible to anyone
waiting) and emits the event.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Hashable

from keepwarm.core.entry import Entry, EntryStatus, LoadSpec
from keepwarm.core.events import Event, EventBus
from keepwarm.core.reaper import Reaper
from keepwarm.core.states import RESIDENT, State, check

#: ``watcher(entry)`` after every transition, under the lock: quick, takes no other lock
#: than its own, and never calls back into the manager.
Watcher = Callable[[Entry], None]


class Counters:
    """Counts of requests and loads. Hits are counted without the lock."""

    NAMES = ("hits", "misses", "loads", "coalesced", "evictions", "failures")

    def __init__(self) -> None:
        self._hits = itertools.count()  # ``next`` is atomic
        self._counts = dict.fromkeys(self.NAMES, 0)  # the others: under the table's lock
        #: Count a hit (no lock): the counter's own ``__next__``, no Python frame.
        self.hit: Callable[[], int] = self._hits.__next__

    def add(self, name: str) -> None:
        self._counts[name] += 1

    def as_dict(self) -> dict[str, int]:
        hits = int(repr(self._hits)[len("count(") : -1])  # the next value, without taking it
        return {**self._counts, "hits": self._counts["hits"] + hits}


class Table:
    def __init__(self, events: EventBus, reaper: Reaper) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.events = events
        self.counters = Counters()
        self.closed = False
        self.room_waiters = 0  # loads waiting in Budget.make_room for a lease to end
        self._reaper = reaper
        self._entries: dict[Hashable, Entry] = {}
        #: The entry of a key, or None (no lock needed: a dict read).
        self.get = self._entries.get
        self._watchers: list[Watcher] = []
        self._wakers: set[Callable[[], None]] = set()  # awaiting requests (see ``wake``)

    # ------------------------------------------------------------------ reading

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def snapshot(self) -> dict[Hashable, EntryStatus]:
        with self.lock:
            return {key: e.status() for key, e in self._entries.items()}

    def used(self, reserving: Entry | None = None) -> tuple[int, int]:
        """Bytes held or reserved, and the number of resident models (with ``reserving``)."""
        resident = [
            e for e in self._entries.values() if e.state in RESIDENT or e.stuck or e is reserving
        ]
        return sum(e.nbytes for e in resident), len(resident)

    # ------------------------------------------------------------------ changing

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        with self.lock:
            self._watchers = [*self._watchers, watcher]

        def unwatch() -> None:
            with self.lock:
                self._watchers = [w for w in self._watchers if w is not watcher]

        return unwatch

    def add_waker(self, waker: Callable[[], None]) -> None:
        """Call ``waker()`` (under the lock: it must only schedule) at the next change."""
        with self.lock:
            self._wakers.add(waker)

    def wakers(self) -> int:
        """How many awaiting requests are registered for the next change."""
        return len(self._wakers)

    def remove_waker(self, waker: Callable[[], None]) -> None:
        with self.lock:
            self._wakers.discard(waker)

    def _wake(self) -> None:
        if self._wakers:
            wakers, self._wakers = self._wakers, set()
            for waker in wakers:
                waker()

    def entry_for(self, key: Hashable, spec: LoadSpec) -> Entry:
        """Under the lock: the entry of ``key``, made when there is none."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = Entry(key, spec)
        return entry

    def forget(self, key: Hashable) -> bool:
        """Drop ``key`` unless it holds memory, a load or a waiting request."""
        with self.lock:
            entry = self._entries.get(key)
            if entry is None:
                return True
            if entry.state in RESIDENT or entry.stuck or entry.reserving or entry.waiters:
                return False
            del self._entries[key]
            self.changed()  # waiters on the table see it gone
            return True

    def set_state(self, entry: Entry, target: State, reason: str | None = None) -> None:
        """Under the lock."""
        entry.state = check(entry.state, target)
        entry.reason = reason
        for watcher in self._watchers:
            watcher(entry)
        self.cond.notify_all()
        self._wake()
        self.events.emit(
            Event("state", entry.key, state=target, reason=reason, nbytes=entry.nbytes)
        )

    def changed(self) -> None:
        """Under the lock: something other than a state changed (an entry went away)."""
        self.cond.notify_all()
        self._wake()

    def drain(self, entry: Entry, reason: str) -> None:
        """Under the lock: take no new leases; unload once the count is 0.

        DRAINING is published (``set_state``) before the count is read: a request that
        took its count after that read sees DRAINING and gives the count back."""
        self.set_state(entry, State.DRAINING, reason)
        if not entry.holders:
            self.finish_unload(entry, reason)

    def finish_unload(self, entry: Entry, reason: str) -> None:
        model, entry.model = entry.model, None
        entry.nbytes = 0
        self.set_state(entry, State.UNLOADED, reason)
        if model is not None:
            self._reaper.close(model, entry, reason, None)

    def released(self, entry: Entry) -> None:
        """A lease on ``entry`` ended (its count is already given back)."""
        if entry.state is State.READY and not self.room_waiters:
            return  # the common case: nothing to do, no lock
        with self.lock:
            if entry.state is State.DRAINING and not entry.holders:
                self.finish_unload(entry, "drained")  # notifies
            elif self.room_waiters:
                self.cond.notify_all()  # an idle model is a candidate for eviction now
