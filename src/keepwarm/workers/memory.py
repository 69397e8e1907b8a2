"""The memory of worker processes: what each reports around its loads and unloads, when
one is to be replaced, and the thread that replaces it.

``memory_hook`` runs inside every worker (the pool's hook): before and after a load or an
unload it reads the worker's PSS into the worker's own ``UnreclaimedLedger`` and reports
``pss_bytes``, ``unreclaimed_bytes`` and ``unloads``; the pool keeps the last figures per
event (``WorkerInfo.figures``).

A worker's *excess* is what it holds that its models did not need when loaded: the bytes
its unloads did not give back, plus its PSS now minus its PSS right after its last load
(allocations that serving left behind, e.g. TensorFlow retracing for new shapes). A
worker whose excess reaches ``workers.recycle_unreclaimed_bytes`` is replaced
(``pool.recycle``: the new worker up and loaded first, the old one finishes its call and
exits), so its memory goes back to the system. A worker that holds a single model and
exits when it is unloaded (the pool's way) gives everything back at each unload; the
excess after its load is what is left to watch.

``MemoryWatch`` applies this every ``workers.memory_check_seconds`` on a thread of its own
(reading one worker's PSS costs about 20 ms once TensorFlow is loaded: never on a request's
path). ``worker_rows(pool)`` is what ``keepwarm.process_memory`` lists for the workers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from keepwarm.process_memory import ProcessMemory, UnreclaimedLedger, pss_bytes
from keepwarm.settings import WorkerSettings

log = logging.getLogger("keepwarm.workers")

_ledger = UnreclaimedLedger()  # in a worker process: that process's own
#: Workers in these states may be recycled (not one already retiring or restarting).
SERVING = frozenset({"ready", "busy"})


def memory_hook(event: str, key: str) -> dict[str, float] | None:
    """The worker hook: record ``event`` (``before_load``, ``after_load``,
    ``before_unload``, ``after_unload``) for model ``key``; return this process's figures."""
    if event == "before_load":
        _ledger.before_load(key)
    elif event == "after_load":
        _ledger.after_load(key)
    elif event == "after_unload":
        _ledger.after_unload(key)
    else:
        return None
    return {
        "pss_bytes": float(_ledger.last_pss or 0),
        "unreclaimed_bytes": float(_ledger.total),
        "unloads": float(_ledger.unloads),
    }


class WorkerView(Protocol):
    """What the watch reads of a worker (``keepwarm.workers.WorkerInfo``)."""

    @property
    def worker_id(self) -> int: ...
    @property
    def pid(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def figures(self) -> Mapping[str, Mapping[str, float]]: ...


class Recyclable(Protocol):
    def workers(self) -> Sequence[WorkerView]: ...
    def recycle(self, worker_id: int) -> bool: ...


@dataclass(frozen=True)
class WorkerMemory:
    """One worker's figures: PSS now, PSS right after its last load, its ledger's total."""

    worker_id: int
    state: str
    pss_bytes: int | None
    loaded_pss_bytes: int | None
    unreclaimed_bytes: int

    @property
    def excess_bytes(self) -> int:
        grown = 0
        if self.pss_bytes is not None and self.loaded_pss_bytes is not None:
            grown = max(0, self.pss_bytes - self.loaded_pss_bytes)
        return self.unreclaimed_bytes + grown

    @classmethod
    def read(cls, info: WorkerView) -> WorkerMemory:
        """``info``'s figures, with its PSS read now."""
        loaded = info.figures.get("after_load", {}).get("pss_bytes")
        unreclaimed = max(
            (info.figures.get(e, {}).get("unreclaimed_bytes", 0.0) for e in info.figures),
            default=0.0,
        )
        return cls(
            info.worker_id,
            info.state,
            pss_bytes(info.pid),
            int(loaded) if loaded else None,
            int(unreclaimed),
        )


def due_for_recycle(workers: Iterable[WorkerMemory], threshold: int | None) -> list[int]:
    """The ids of the serving workers whose excess reaches ``threshold`` (None: never)."""
    if threshold is None:
        return []
    return [w.worker_id for w in workers if w.state in SERVING and w.excess_bytes >= threshold]


def worker_rows(pool: Recyclable) -> list[ProcessMemory]:
    """Every worker process of ``pool``: its PSS, read now, and the bytes its unloads did
    not give back (what ``keepwarm.process_memory`` lists for status and ``/metrics``)."""
    out = []
    for info in pool.workers():
        row = WorkerMemory.read(info)
        figures = info.figures.get("after_unload") or info.figures.get("after_load") or {}
        out.append(
            ProcessMemory(
                str(info.worker_id),
                info.pid,
                row.pss_bytes,
                row.unreclaimed_bytes,
                int(figures.get("unloads", 0)),
            )
        )
    return out


class MemoryWatch:
    """Every ``interval`` seconds, replace the workers of ``pool`` that ``due_for_recycle``
    names, until ``close()``."""

    def __init__(
        self,
        pool: Recyclable,
        *,
        threshold: int | None,
        interval: float,
        on_recycle: Callable[[WorkerMemory], None] | None = None,
    ) -> None:
        self._pool, self._threshold, self._interval = pool, threshold, interval
        self._on_recycle = on_recycle
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one check at a time
        self._thread = threading.Thread(target=self._run, name="keepwarm-memory", daemon=True)
        self._thread.start()

    def check(self) -> list[int]:
        """One pass: recycle the workers due; returns the ids replaced."""
        with self._lock:
            rows = [WorkerMemory.read(info) for info in self._pool.workers()]
            by_id = {row.worker_id: row for row in rows}
            replaced = []
            for worker_id in due_for_recycle(rows, self._threshold):
                row = by_id[worker_id]
                log.info(
                    "worker %s holds %d MB past its load (PSS %s MB): replacing it",
                    worker_id, row.excess_bytes >> 20, (row.pss_bytes or 0) >> 20,
                )  # fmt: skip
                try:
                    done = self._pool.recycle(worker_id)
                except Exception:
                    log.exception("replacing worker %s failed; it keeps serving", worker_id)
                    continue
                if done:
                    replaced.append(worker_id)
                    if self._on_recycle is not None:
                        self._on_recycle(row)
            return replaced

    def close(self) -> None:
        """Stop the thread (a replacement under way finishes first)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # a bug here must not end the watch
                log.exception("the worker memory check failed")


def watch_default_pool(settings: WorkerSettings) -> Callable[[], None]:
    """Start a ``MemoryWatch`` of the process's pool with ``settings``' threshold and
    interval; returns the function that stops it (the server calls it at shutdown)."""
    from keepwarm.workers.pool import default_pool

    watch = MemoryWatch(
        default_pool(),
        threshold=settings.recycle_unreclaimed_bytes,
        interval=settings.memory_check_seconds,
    )
    return watch.close
