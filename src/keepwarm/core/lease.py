"""A counted reference to one loaded version, held for the length of one request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keepwarm.core.entry import Entry
    from keepwarm.core.manager import Manager


class Lease:
    __slots__ = ("_entry", "_manager", "_released", "model")

    def __init__(self, manager: Manager, entry: Entry) -> None:
        self._manager = manager
        self._entry = entry
        self._released = False
        self.model: Any = entry.model

    def release(self) -> None:
        """End the lease (idempotent). The version may unload once its leases reach zero."""
        if not self._released:
            self._released = True
            self._manager._release(self._entry)

    def __enter__(self) -> Any:
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.release()
