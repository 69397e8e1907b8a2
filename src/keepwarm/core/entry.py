"""One version's record in the manager's table, and what the manager needs to load it."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
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
    """Mutable state of one key; every field is guarded by the manager's lock."""

    def __init__(self, key: Hashable, spec: LoadSpec) -> None:
        self.key = key
        self.spec = spec
        self.state = State.NEW
        self.reason: str | None = None
        self.model: Any = None
        self.leases = 0
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

    def set_spec(self, spec: LoadSpec) -> None:
        """A new way to load this key (say, a fixed model.toml): retry without backoff."""
        if spec is not self.spec:
            self.spec = spec
            self.retry_at = 0.0

    def estimate_known(self) -> bool:
        return self.estimate is not None and self.estimate[0] is self.spec

    def retry_due(self) -> bool:
        return not self.stuck and time.monotonic() >= self.retry_at

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "state": self.state.value,
            "reason": self.reason,
            "leases": self.leases,
            "waiters": self.waiters,
            "nbytes": self.nbytes,
            "pinned": self.pinned,
            "failures": self.failures,
            "retry_in": max(0.0, self.retry_at - now) if self.state is State.FAILED else None,
            "load_seconds": round(self.load_seconds, 4),
            "stuck_load": self.stuck,
            "unreclaimed_bytes": self.unreclaimed_bytes,
        }
