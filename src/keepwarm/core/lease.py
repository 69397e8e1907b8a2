"""A counted reference to one loaded version, held for the length of one request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keepwarm.core.entry import Entry


class Lease:
    """``model`` is what the request uses; ``release()`` (idempotent) gives the count back.
    Also a context manager: ``with lease as model: ...``."""

    __slots__ = ("_entry", "_give", "model")

    def __init__(self, entry: Entry, model: Any, give: Callable[[Entry], None]) -> None:
        self._entry: Entry | None = entry
        self._give = give  # gives the count back (``Requests.give``)
        self.model = model

    def release(self) -> None:
        """End the lease (idempotent). The version may unload once its leases reach zero."""
        entry, self._entry = self._entry, None
        if entry is not None:
            self._give(entry)

    def __enter__(self) -> Any:
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.release()
