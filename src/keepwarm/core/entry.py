"""One version's record in the manager's table, and what the manager needs to load it."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from keepwarm.core.states import State
from keepwarm.errors import KeepwarmError


class LoadSpec(Protocol):
    """How to load one version. Supplied by the caller; ``core`` knows no framework."""

    @property
    def description(self) -> str: ...

    def estimate_nbytes(self) -> int:
        """The size to reserve in the budget before loading (cheap: no framework)."""
        ...

    def load(self) -> Any:
        """Load and return the model (an object with ``nbytes`` and ``close()``)."""
        ...

    def warmup(self, model: Any) -> str | None:
        """Run the model until its first real request will be fast; raise to fail the load.
        Returns a note for the READY state's reason (say, "generated warmup skipped: ...")."""
        ...


class Entry:
    """The state of one key. Every field is written under the table's lock; requests read
    ``state`` and ``model`` and count themselves in ``holders`` without it (see
    ``core.requests``)."""

    __slots__ = (
        "attempt",
        "error",
        "estimate",
        "failures",
        "holders",
        "key",
        "last_used",
        "load_seconds",
        "model",
        "nbytes",
        "pinned",
        "reason",
        "reserving",
        "retry_at",
        "spec",
        "state",
        "stuck",
        "timer",
        "unreclaimed_bytes",
        "waiters",
    )

    def __init__(self, key: Hashable, spec: LoadSpec) -> None:
        self.key = key
        self.spec = spec
        self.state = State.NEW
        self.reason: str | None = None
        self.model: Any = None
        # One item per lease held: ``list.append`` and ``list.pop`` are atomic, so a
        # request takes and gives back its count without a lock.
        self.holders: list[None] = []
        self.waiters = 0  # requests waiting for this key to load (it is not evicted)
        self.nbytes = 0
        self.pinned = False
        self.reserving = False
        self.stuck = False  # a timed-out load has not returned yet
        self.attempt = 0
        self.failures = 0
        self.retry_at = 0.0
        self.error: KeepwarmError | None = None
        self.timer: threading.Timer | None = None
        self.load_seconds = 0.0
        self.last_used = 0.0
        self.unreclaimed_bytes: int | None = None  # after the last unload, measured
        self.estimate: tuple[LoadSpec, int] | None = None  # (spec, bytes), made off the lock

    @property
    def leases(self) -> int:
        return len(self.holders)

    def set_spec(self, spec: LoadSpec) -> None:
        """A new way to load this key (say, a fixed model.toml): retry without backoff."""
        if spec is not self.spec:
            self.spec = spec
            self.retry_at = 0.0

    def estimate_known(self) -> bool:
        return self.estimate is not None and self.estimate[0] is self.spec

    def idle(self) -> bool:
        """Not loaded, loading, nor waiting to: a load may start."""
        return self.state in (State.NEW, State.UNLOADED, State.FAILED) and not self.reserving

    def due(self) -> bool:
        """A load should start now: never loaded, unloaded, or failed and its backoff over."""
        if not self.idle():
            return False
        if self.state is State.FAILED:
            return not self.stuck and time.monotonic() >= self.retry_at
        return True

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def status(self) -> EntryStatus:
        """A copy of what status reports (read under the table's lock)."""
        failed = self.state is State.FAILED
        return EntryStatus(
            state=self.state,
            reason=self.reason,
            leases=self.leases,
            waiters=self.waiters,
            nbytes=self.nbytes,
            pinned=self.pinned,
            failures=self.failures,
            retry_in=max(0.0, self.retry_at - time.monotonic()) if failed else None,
            load_seconds=round(self.load_seconds, 4),
            stuck_load=self.stuck,
            unreclaimed_bytes=self.unreclaimed_bytes,
        )


@dataclass(frozen=True)
class EntryStatus:
    """One key's state, reason and figures, as ``Manager.snapshot()`` reports them."""

    state: State
    reason: str | None = None
    leases: int = 0
    waiters: int = 0
    nbytes: int = 0
    pinned: bool = False
    failures: int = 0
    retry_in: float | None = None  # seconds until a FAILED load is retried
    load_seconds: float = 0.0
    stuck_load: bool = False  # a timed-out load has not returned yet
    unreclaimed_bytes: int | None = None  # after the last unload, measured

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON (the state as its name)."""
        out = asdict(self)
        out["state"] = self.state.value
        return out
