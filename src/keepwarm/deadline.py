"""The deadline of the request that runs on this thread, for the parts below the service
that wait without being handed one: a worker process that restarts
(``keepwarm.workers``) makes a request wait, and the wait must end at its deadline.

``begin`` (``keepwarm.batching.serving``) sets it around a request's ``predict``; a
``time.monotonic()`` instant, or None (no deadline)."""

from __future__ import annotations

from contextvars import ContextVar

#: The running request's deadline (``time.monotonic()``), None when it has none.
request_deadline: ContextVar[float | None] = ContextVar("keepwarm_deadline", default=None)
