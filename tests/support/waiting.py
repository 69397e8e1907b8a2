"""Bounded waits on the condition a test really awaits, for state that signals no event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Any

from keepwarm.core.manager import Manager
from keepwarm.core.states import State

WAIT_S = 30.0
POLL_S = 0.005


def wait_until(predicate: Callable[[], object], timeout: float = WAIT_S) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed; return
    whether it became true. For state that no event or condition variable announces."""
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bool(predicate())
        time.sleep(min(POLL_S, remaining))
    return True


def unloaded(repo: Any, key: Hashable, timeout: float = WAIT_S) -> bool:
    """Wait until ``key`` is UNLOADED in ``repo``, or forgotten (a version gone from disk,
    once unloaded, is dropped from the table: ``state`` is then None)."""
    manager = repo.manager
    return bool(manager.wait_for(lambda: manager.state(key) in (State.UNLOADED, None), timeout))


def waiting_for_room(manager: Manager, key: Hashable, *, ready: Hashable = None) -> bool:
    """Whether ``key``'s load is waiting in the budget for room, with ``ready`` (if given)
    READY at that moment. Read under the manager's lock: the reserving thread lets go of
    it only inside that wait, so this is the moment it has decided to wait, not evict."""

    def check() -> bool:
        entry = manager.entry(key)
        waiting = entry is not None and entry.reserving
        return waiting and (ready is None or manager.state(ready) is State.READY)

    return manager.wait_for(check, 0)


async def until_async(predicate: Callable[[], object], timeout: float = WAIT_S) -> None:
    """Let the event loop run until ``predicate`` holds (checked at each turn); fail the
    test after ``timeout`` seconds. A loop that never turns would hang here: this is
    also the check that whatever awaits meanwhile does not block the loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs: gone, or a zombie waiting to be reaped, is dead."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return False
