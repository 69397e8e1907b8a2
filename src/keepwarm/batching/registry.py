"""The process's live batchers, by model name: for admission (a request refused, or a
place reserved for it, before its body is read) and for metrics. A ``BatchedModel``
registers itself when made and leaves when closed."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keepwarm.batching.stats import BatchStats
from keepwarm.core.loader import at_exit

if TYPE_CHECKING:
    import asyncio

    from keepwarm.batching.batcher import Batcher
    from keepwarm.batching.model import BatchedModel

_live_lock = threading.Lock()
_live: weakref.WeakSet[BatchedModel] = weakref.WeakSet()
#: Per model name, its batched versions: replaced whole under ``_live_lock`` when one
#: comes or goes, read without a lock by every request's admission.
_named: dict[str, tuple[weakref.ref[BatchedModel], ...]] = {}


def register(model: BatchedModel) -> None:
    """``model`` is live (from its constructor)."""
    with _live_lock:
        _live.add(model)
        _reindex()


def unregister(model: BatchedModel) -> None:
    """``model`` is closed."""
    with _live_lock:
        _live.discard(model)
        _reindex()


def stop_all_warming(timeout: float) -> None:
    """Every live model starts no further warm run; wait up to ``timeout`` seconds in all
    for the runs under way (at interpreter exit: ``keepwarm.batching.model``)."""
    with _live_lock:
        models = list(_live)
    deadline = time.monotonic() + timeout
    for m in models:  # all stop first, then each is waited for
        m.stop_warming(0.0)
    for m in models:
        m.stop_warming(max(0.0, deadline - time.monotonic()))


def _reindex() -> None:
    """Under ``_live_lock``: ``_named`` from ``_live``."""
    global _named
    named: dict[str, list[weakref.ref[BatchedModel]]] = {}
    for m in _live:
        if m.why_not is None:
            named.setdefault(m.name, []).append(weakref.ref(m))
    _named = {name: tuple(refs) for name, refs in named.items()}


def _batched(name: str) -> list[BatchedModel]:
    """The live batched versions of model ``name``."""
    return [m for ref in _named.get(name, ()) if (m := ref()) is not None]


@dataclass(frozen=True)
class BatcherView:
    """One live batcher, for metrics and status: its model, version, counters, queue."""

    model: str
    version: int | None
    stats: BatchStats
    queued: int
    max_queue: int
    batch_seconds: Mapping[int, float]  # the latency table: bucket -> seconds per batch
    warm_failure: str | None = None  # why buckets past the cap were not warmed
    warm_rows: int = 0  # the largest batch formed now: the buckets warm so far
    max_batch_size: int = 0


def live_batchers() -> list[BatcherView]:
    """Every batcher of a loaded version in this process (read at each metrics scrape)."""
    with _live_lock:
        models = [m for m in _live if m.why_not is None]
    return [
        BatcherView(
            m.name,
            m.version,
            m.stats(),
            m.batcher.queued,
            m.batcher.max_queue,
            m.batcher.latency.snapshot(),
            m.warm_failure,
            m.batcher.latency.cap,
            m.batcher.max_batch_size,
        )
        for m in models
    ]


class Admission:
    """A place reserved in the queue of model ``name``'s batcher for one admitted request
    (``admit``); ``release()`` gives it back: once, from any thread, however often called.
    ``release`` takes (and ignores) one argument, so that it can be a task's done callback
    as it is."""

    __slots__ = ("_batcher", "_token", "name", "task")

    def __init__(self, name: str, batcher: Batcher) -> None:
        self.name = name
        self._batcher = batcher
        self._token = [True]  # list.pop is atomic: one release wins
        #: The task whose end releases it (``serving.admit_request``), until released.
        self.task: asyncio.Task[Any] | None = None

    def release(self, _task: object = None) -> None:
        if not self._token:  # released already (the usual second call): no exception
            return
        try:
            self._token.pop()
        except IndexError:  # another thread's release won the race
            return
        self.task = None  # no cycle (its task's context holds it) left to the collector
        self._batcher.unreserve()


def admit(name: str) -> Admission | None:
    """Reserve a place in the queue of a loaded version of model ``name``, so that a
    request admitted now counts toward ``max_queue`` while its body is read and decoded
    (None: no version of it is batched). When every version's queue is full (queued and
    reserved), ``UnavailableError``, counted as rejected: refused before any other work."""
    mine = _batched(name)
    for m in mine:
        if m.batcher.reserve():
            return Admission(name, m.batcher)
    if mine:
        raise mine[0].batcher.refuse()
    return None


def refuse_when_full(name: str) -> None:
    """Raise ``UnavailableError`` (counted as rejected) when every loaded version of model
    ``name`` has a full queue: a server refuses such a request before any other work."""
    mine = _batched(name)
    if mine and all(m.batcher.full for m in mine):
        raise mine[0].batcher.refuse()


at_exit(stop_all_warming)  # the interpreter's exit waits for the warm runs under way
