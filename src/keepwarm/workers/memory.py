"""The memory of worker processes: what each reports around its loads and unloads, when
one is to be replaced, and the thread that replaces it.

``memory_hook`` runs inside every worker (the pool's hook): before and after a load or an
unload it reads the worker's PSS into the worker's own ``UnreclaimedLedger`` and reports
``pss_bytes``, ``unreclaimed_bytes`` and ``unloads``; the pool keeps the last figures per
event (``WorkerInfo.figures``).

Two reasons replace a worker (``pool.recycle``: the new worker up and loaded first, the
old one finishes its call and exits, its memory back to the system): its unloads left
``workers.recycle_unreclaimed_bytes`` or more behind (the ledger's total; a worker of the
pool holds one loaded version and exits when it unloads, so this guards workers that
outlive an unload), or, only when ``workers.recycle_growth_bytes`` is set, its PSS grew
that much past its PSS right after its load (a model that leaks while it serves). Growth
is off by default because TensorFlow keeps the memory of the largest batch it has run:
a MobileNetV2 worker holds about 480 MB more after one batch of 32 than after its load,
and a replacement would grow the same way at its first large batch.

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
    def grown_bytes(self) -> int:
        """PSS now minus PSS after its load (0 when either is unknown or it shrank)."""
        if self.pss_bytes is None or self.loaded_pss_bytes is None:
            return 0
        return max(0, self.pss_bytes - self.loaded_pss_bytes)

    @classmethod
    def read(cls, info: WorkerView, *, pss: bool = True) -> WorkerMemory:
        """``info``'s figures, with its PSS read now (``pss=False``: not read, None)."""
        loaded = info.figures.get("after_load", {}).get("pss_bytes")
        unreclaimed = max(
            (info.figures.get(e, {}).get("unreclaimed_bytes", 0.0) for e in info.figures),
            default=0.0,
        )
        return cls(
            info.worker_id,
            info.state,
            pss_bytes(info.pid) if pss else None,
            int(loaded) if loaded else None,
            int(unreclaimed),
        )


@dataclass(frozen=True)
class RecyclePolicy:
    """``unreclaimed``: the bytes a worker's unloads may leave behind; ``growth``: how far
    its PSS may grow past its PSS after its load. None: no limit of that kind."""

    unreclaimed: int | None
    growth: int | None = None

    @classmethod
    def of(cls, settings: WorkerSettings) -> RecyclePolicy:
        return cls(settings.recycle_unreclaimed_bytes, settings.recycle_growth_bytes)

    def why(self, worker: WorkerMemory) -> str | None:
        """Why ``worker`` is to be replaced, or None."""
        if worker.state not in SERVING:
            return None
        if self.unreclaimed is not None and worker.unreclaimed_bytes >= self.unreclaimed:
            return f"its unloads left {worker.unreclaimed_bytes >> 20} MB behind"
        if self.growth is not None and worker.grown_bytes >= self.growth:
            return f"it grew {worker.grown_bytes >> 20} MB past its load"
        return None

    def due(self, workers: Iterable[WorkerMemory]) -> list[tuple[int, str]]:
        """(id, why) of each serving worker to replace."""
        return [(w.worker_id, why) for w in workers if (why := self.why(w)) is not None]


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
    """Every ``interval`` seconds, replace the workers of ``pool`` that ``policy`` names,
    until ``close()``. Without a growth limit no PSS is read (the ledger's figures come
    with the pool's replies), so the watch then costs next to nothing."""

    def __init__(
        self,
        pool: Recyclable,
        policy: RecyclePolicy,
        *,
        interval: float,
        on_recycle: Callable[[int, str], None] | None = None,
    ) -> None:
        self._pool, self._policy, self._interval = pool, policy, interval
        self._on_recycle = on_recycle
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one check at a time
        self._thread = threading.Thread(target=self._run, name="keepwarm-memory", daemon=True)
        self._thread.start()

    def check(self) -> list[int]:
        """One pass: replace the workers due; returns the ids replaced."""
        with self._lock:
            if self._policy.unreclaimed is None and self._policy.growth is None:
                return []
            pss = self._policy.growth is not None
            rows = [WorkerMemory.read(info, pss=pss) for info in self._pool.workers()]
            replaced = []
            for worker_id, why in self._policy.due(rows):
                log.info("worker %s: %s; replacing it", worker_id, why)
                try:
                    done = self._pool.recycle(worker_id)
                except Exception:
                    log.exception("replacing worker %s failed; it keeps serving", worker_id)
                    continue
                if done:
                    replaced.append(worker_id)
                    if self._on_recycle is not None:
                        self._on_recycle(worker_id, why)
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
    """Start a ``MemoryWatch`` of the process's pool with ``settings``' limits and
    interval; returns the function that stops it (the server calls it at shutdown)."""
    from keepwarm.workers.pool import default_pool

    watch = MemoryWatch(
        default_pool(), RecyclePolicy.of(settings), interval=settings.memory_check_seconds
    )
    return watch.close
