"""Which worker process serves which call, for one model: its slots (a place for one
process each; the process in it changes on restart or recycle), the callers waiting for
a free one, and the bookkeeping of deaths and replacements. Nothing here starts or stops
a process (``WorkerGroup`` does); everything here happens under one condition.

A caller waits for a free worker no later than its request's deadline
(``DeadlineExceededError``), and, while no worker of the model is up (every one is
restarting), no longer than ``start_timeout`` (``UnavailableError``): nothing waits
forever for a worker that does not come back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keepwarm.errors import DeadlineExceededError, UnavailableError
from keepwarm.workers.messages import Figures

if TYPE_CHECKING:
    from keepwarm.workers.handle import WorkerProcess


@dataclass(frozen=True)
class WorkerInfo:
    """One worker process, as ``WorkerPool.workers()`` reports it."""

    worker_id: int
    pid: int
    models: tuple[str, ...]
    restarts: int  # of its slot: how many times a worker there was started again
    state: str  # "ready", "busy", "restarting", "retiring"
    figures: Figures = field(default_factory=dict)  # the hook's last figures, per event


class Slot:
    """A place for one worker process."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker: WorkerProcess | None = worker  # None while it restarts
        self.in_call: WorkerProcess | None = None  # the worker a caller is using
        self.restarts = 0
        self.crashes = 0  # deaths since the last successful call


class Slots:
    """The slots of model ``name``'s workers."""

    def __init__(self, name: str, start_timeout: float) -> None:
        self.name = name
        self._start_timeout = start_timeout
        self._cond = threading.Condition()
        self._slots: list[Slot] = []
        self._idle: list[Slot] = []
        self._retiring: list[WorkerProcess] = []  # replaced while in a call
        self._closed = False
        self._hurried = False  # close() waits for no running call
        self.broken: str | None = None
        self._on_broken: list[Callable[[str], None]] = []

    def add(self, worker: WorkerProcess) -> None:
        with self._cond:
            slot = Slot(worker)
            self._slots.append(slot)
            self._idle.append(slot)
            self._cond.notify()

    # ------------------------------------------------------------------ calls

    def checkout(self, deadline: float | None) -> tuple[Slot, WorkerProcess]:
        """A free worker, and its slot, for one call (see the module docstring)."""
        restarting_since: float | None = None
        with self._cond:
            while True:
                self._check_open()
                if self._idle:
                    slot = self._idle.pop()
                    assert slot.worker is not None
                    slot.in_call = slot.worker
                    return slot, slot.worker
                now = time.monotonic()
                up = any(s.worker is not None for s in self._slots)
                if deadline is not None and now >= deadline:
                    raise DeadlineExceededError(
                        f"model {self.name!r}: the request's deadline passed while it waited "
                        f"for a worker process{'' if up else ' (restarting)'}"
                    )
                limit = deadline
                if up:  # a busy worker answers: it is waited for (until the deadline)
                    restarting_since = None
                else:
                    restarting_since = now if restarting_since is None else restarting_since
                    until = restarting_since + self._start_timeout
                    if now >= until:
                        raise UnavailableError(
                            f"model {self.name!r}: its worker process is restarting and was "
                            f"not back within {self._start_timeout:g} s "
                            "(workers.start_timeout): retry"
                        )
                    limit = until if deadline is None else min(deadline, until)
                self._cond.wait(None if limit is None else limit - now)

    def _check_open(self) -> None:
        if self.broken is not None:
            raise UnavailableError(f"model {self.name!r}: {self.broken}")
        if self._closed:
            raise UnavailableError(f"model {self.name!r} is unloaded (its workers stopped)")

    def checkin(self, slot: Slot, worker: WorkerProcess, *, ok: bool) -> WorkerProcess | None:
        """The call on ``worker`` ended; returns ``worker`` when it was replaced meanwhile
        (the caller stops it: it retires)."""
        with self._cond:
            slot.in_call = None
            self._cond.notify_all()
            if ok:
                slot.crashes = 0
            stale = worker if slot.worker is not worker else None
            if slot.worker is not None and not self._closed and slot not in self._idle:
                self._idle.append(slot)
            return stale

    def lost(self, slot: Slot, worker: WorkerProcess) -> None:
        """``worker`` died in a call (its death is handled by ``vacate``)."""
        with self._cond:
            if slot.in_call is worker:  # (the slot may already serve a restarted worker)
                slot.in_call = None
            if worker in self._retiring:  # a recycled worker, dead before its call ended
                self._retiring.remove(worker)
            self._cond.notify_all()

    # ------------------------------------------------------------------ deaths

    def vacate(self, worker: WorkerProcess) -> Slot | None:
        """``worker`` died: its slot, now empty (to restart), or None (not serving here)."""
        with self._cond:
            slot = next((s for s in self._slots if s.worker is worker), None)
            if slot is None or self._closed or self.broken is not None:
                return None
            slot.worker = None
            if slot in self._idle:
                self._idle.remove(slot)
            self._cond.notify_all()  # waiters now wait for a restart: bounded
            return slot

    def crashed(self, slot: Slot, max_restarts: int) -> bool | None:
        """Count a death in ``slot``: True to restart it, False when that makes more than
        ``max_restarts`` in a row (the model is broken), None once closed."""
        with self._cond:
            if self._closed:
                return None
            slot.crashes += 1
            if slot.crashes > max_restarts:
                return False
            slot.restarts += 1
            return True

    def fill(self, slot: Slot, worker: WorkerProcess) -> bool:
        """Put the restarted ``worker`` in ``slot``; False once closed (stop it)."""
        with self._cond:
            if self._closed:
                return False
            slot.worker = worker
            self._idle.append(slot)
            self._cond.notify_all()
            return True

    def break_(self, reason: str) -> list[Callable[[str], None]]:
        """The model cannot be served: callers fail; returns the watchers to tell."""
        with self._cond:
            self.broken = reason
            self._cond.notify_all()
            return list(self._on_broken)

    def watch_broken(self, callback: Callable[[str], None]) -> str | None:
        """Keep ``callback`` for a break; the reason instead when already broken."""
        with self._cond:
            if self.broken is None:
                self._on_broken.append(callback)
            return self.broken

    # ------------------------------------------------------------------ recycling

    def serves(self, worker_id: int) -> bool:
        with self._cond:
            return self._slot_of(worker_id) is not None

    def swap(
        self, worker_id: int, new: WorkerProcess
    ) -> tuple[WorkerProcess | None, WorkerProcess | None]:
        """Put ``new`` in place of worker ``worker_id``. Returns (``new`` when it could
        not be placed: stop it, the old worker when it is free: stop it); an old worker
        in a call retires when the call ends (``checkin``)."""
        with self._cond:
            slot = self._slot_of(worker_id)
            if self._closed or slot is None or slot.worker is None:
                return new, None  # it died or was replaced meanwhile
            old = slot.worker
            slot.worker = new
            if slot.in_call is old:
                self._retiring.append(old)
                return None, None
            return None, old

    def retired(self, worker: WorkerProcess) -> None:
        with self._cond:
            if worker in self._retiring:
                self._retiring.remove(worker)

    def _slot_of(self, worker_id: int) -> Slot | None:
        for slot in self._slots:
            if slot.worker is not None and slot.worker.worker_id == worker_id:
                return slot
        return None

    # ------------------------------------------------------------------ the whole

    def infos(self, key: str) -> list[WorkerInfo]:
        with self._cond:
            found = []
            for slot in self._slots:
                worker = slot.worker
                if worker is None:
                    continue
                state = "busy" if slot.in_call is worker else "ready"
                found.append(
                    WorkerInfo(
                        worker.worker_id, worker.pid, (key,), slot.restarts, state,
                        dict(worker.figures),
                    )
                )  # fmt: skip
            found += [
                WorkerInfo(w.worker_id, w.pid, (key,), 0, "retiring", dict(w.figures))
                for w in self._retiring
            ]
            return found

    def hurry(self) -> None:
        """``close`` (now or later) waits for no running call."""
        with self._cond:
            self._hurried = True
            self._cond.notify_all()

    def close(self, timeout: float) -> tuple[list[WorkerProcess], list[WorkerProcess]]:
        """No more calls; waits up to ``timeout`` for calls running to end (not at all once
        ``hurry`` was called). Returns every worker (the caller stops them), and those still
        in a call then."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: self._hurried or not any(s.in_call for s in self._slots), timeout
            )
            workers = [s.worker for s in self._slots if s.worker is not None]
            workers += self._retiring
            busy = [s.in_call for s in self._slots if s.in_call is not None]
            for slot in self._slots:
                slot.worker = None
            self._idle.clear()
            self._retiring = []
            return workers, busy
