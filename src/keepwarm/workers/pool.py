"""The process's worker pool: every model served by worker processes, its workers, and
the counts of restarts and recycles (``/metrics``).

``default_pool()`` is the one the load path uses. ``workers()`` lists every worker process
(id, pid, the models it holds, restarts, state, the hook's figures); ``recycle(id)``
replaces one (the new one up and loaded first, then the old one finishes its call and
exits). ``hook``, when set, is a picklable callable ``hook(event, key) -> figures | None``
that each worker calls around its loads and unloads (``before_load``, ``after_load``,
``before_unload``, ``after_unload``); what it returns is kept per worker (``figures``).
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from typing import Any

from keepwarm.load_description import LoadDescription
from keepwarm.process_memory import register
from keepwarm.settings import WorkerSettings
from keepwarm.workers.group import WorkerGroup, WorkerInfo
from keepwarm.workers.memory import memory_hook, worker_rows
from keepwarm.workers.model import WorkerModel


class WorkerPool:
    def __init__(self, hook: Any = None) -> None:
        self.hook = hook
        self._lock = threading.Lock()
        self._groups: list[WorkerGroup] = []
        self._ids = itertools.count(1)
        self._restarts: Counter[str] = Counter()
        self._recycles: Counter[str] = Counter()

    def start_model(
        self,
        key: str,
        description: LoadDescription,
        *,
        name: str,
        processes: int,
        settings: WorkerSettings,
    ) -> WorkerModel:
        """Start ``processes`` workers that each load ``description``; raises the load's
        error (a ``ModelLoadError`` naming what failed) when they cannot."""
        group = WorkerGroup(
            key,
            description,
            name=name,
            processes=processes,
            settings=settings,
            new_id=self._new_id,
            hook=self._current_hook,  # read at each start: a hook set later applies too
            on_restart=self._restarted,
        )
        with self._lock:
            self._groups.append(group)
        return WorkerModel(group, self._forget)

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            groups = list(self._groups)
        return [info for group in groups for info in group.infos()]

    def recycle(self, worker_id: int) -> bool:
        """Replace worker ``worker_id`` with a new one, loaded first; no request fails.
        False when no such worker is serving (it died or was replaced meanwhile)."""
        with self._lock:
            groups = list(self._groups)
        for group in groups:
            if any(info.worker_id == worker_id for info in group.infos()):
                replaced = group.recycle(worker_id)
                if replaced:
                    with self._lock:
                        self._recycles[group.name] += 1
                return replaced
        return False

    def counts(self) -> dict[str, dict[str, int]]:
        """Per model name: ``restarts`` and ``recycles`` so far (for ``/metrics``); a model
        served by workers shows 0 before its first (a counter's series exists from the
        start, so that a rate over it is defined)."""
        with self._lock:
            names = set(self._restarts) | set(self._recycles) | {g.name for g in self._groups}
            return {
                n: {"restarts": self._restarts[n], "recycles": self._recycles[n]} for n in names
            }

    def hurry(self, why: str | None = None) -> None:
        """Calls still running in workers are abandoned: unloading a model now kills its
        workers still in a call at once instead of waiting for them, their callers told
        the model ``why`` (``keepwarm serve`` past its drain timeout). Models started
        after this wait as before."""
        with self._lock:
            groups = list(self._groups)
        for group in groups:
            group.hurry(why)

    def close(self) -> None:
        """Stop every worker of every model."""
        with self._lock:
            groups, self._groups = self._groups, []
        for group in groups:
            group.close()

    def _current_hook(self) -> Any:
        return self.hook

    def _new_id(self) -> int:
        return next(self._ids)

    def _restarted(self, name: str) -> None:
        with self._lock:
            self._restarts[name] += 1

    def _forget(self, group: WorkerGroup) -> None:
        with self._lock:
            if group in self._groups:
                self._groups.remove(group)


_default_lock = threading.Lock()
_default: WorkerPool | None = None


def default_pool() -> WorkerPool:
    """The process's pool, made on first use: its workers report their memory around
    loads and unloads, and are listed in ``keepwarm.process_memory`` (status, /metrics)."""
    global _default
    with _default_lock:
        if _default is None:
            pool = _default = WorkerPool(hook=memory_hook)
            register(lambda: worker_rows(pool))
        return _default


def load_in_workers(
    description: LoadDescription,
    name: str,
    version: int | None,
    processes: int,
    settings: WorkerSettings,
) -> WorkerModel:
    """Model ``name`` (``version``) loaded from ``description`` in ``processes`` workers of
    the process's pool (the load path's entry here)."""
    key = name if version is None else f"{name}:{version}"
    return default_pool().start_model(
        key, description, name=name, processes=processes, settings=settings
    )
