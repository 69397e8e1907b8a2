"""The worker processes serving one loaded model: one call at a time per process, a dead
process restarted (its model loaded again before it takes a request), a crash loop turned
into a broken model, and a process replaced on request (``recycle``) with no request lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from keepwarm.errors import ModelLoadError, UnavailableError
from keepwarm.load_description import LoadDescription
from keepwarm.settings import WorkerSettings
from keepwarm.workers.handle import WorkerDied, WorkerProcess
from keepwarm.workers.messages import Figures, Loaded

log = logging.getLogger("keepwarm.workers")

_STOP_TIMEOUT = 10.0  # seconds a stopping worker may take to unload before it is killed


@dataclass(frozen=True)
class WorkerInfo:
    """One worker process, as ``WorkerPool.workers()`` reports it."""

    worker_id: int
    pid: int
    models: tuple[str, ...]
    restarts: int  # of its slot: how many times a worker there was started again
    state: str  # "ready", "busy", "restarting", "retiring"
    figures: Figures = field(default_factory=dict)  # the hook's last figures, per event


class _Slot:
    """A place for one worker process; the process in it changes on restart or recycle."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker: WorkerProcess | None = worker
        self.in_call: WorkerProcess | None = None  # the worker a caller is using
        self.restarts = 0
        self.crashes = 0  # deaths since the last successful call


class WorkerGroup:
    """``processes`` workers, each with the model ``key`` loaded from ``description``."""

    def __init__(
        self,
        key: str,
        description: LoadDescription,
        *,
        name: str,
        processes: int,
        settings: WorkerSettings,
        new_id: Callable[[], int],
        hook: Callable[[], object] = lambda: None,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.key, self.description, self.name = key, description, name
        self.settings = settings
        self._new_id, self._hook, self._on_restart = new_id, hook, on_restart
        self._cond = threading.Condition()
        self._closed = False
        self.broken: str | None = None
        self._on_broken: list[Callable[[str], None]] = []
        self._retiring: list[WorkerProcess] = []
        self._slots: list[_Slot] = []
        self._idle: list[_Slot] = []
        self.loaded: Loaded | None = None
        spawned: list[WorkerProcess] = []
        try:
            spawned += [self._spawn() for _ in range(processes)]  # they start side by side
            while spawned:
                self.loaded = self._load(spawned[0])
                slot = _Slot(spawned.pop(0))
                self._slots.append(slot)
                self._idle.append(slot)
        except BaseException:
            for worker in spawned:
                worker.kill()
            self.close()
            raise

    # ------------------------------------------------------------------ calls

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        slot, worker = self._checkout()
        try:
            outputs = worker.predict(self.key, inputs)
        except WorkerDied as died:
            self._lost(slot, worker)
            raise UnavailableError(
                f"model {self.name!r}: its {died}; the request was lost, the worker is "
                "restarted: retry"
            ) from None
        except BaseException:
            self._checkin(slot, worker, ok=False)
            raise
        self._checkin(slot, worker, ok=True)
        return outputs

    def _checkout(self) -> tuple[_Slot, WorkerProcess]:
        with self._cond:
            while True:
                self._check_open()
                if self._idle:
                    slot = self._idle.pop()
                    assert slot.worker is not None
                    slot.in_call = slot.worker
                    return slot, slot.worker
                self._cond.wait()

    def _check_open(self) -> None:
        if self.broken is not None:
            raise UnavailableError(f"model {self.name!r}: {self.broken}")
        if self._closed:
            raise UnavailableError(f"model {self.name!r} is unloaded (its workers stopped)")

    def _checkin(self, slot: _Slot, worker: WorkerProcess, *, ok: bool) -> None:
        stale = None
        with self._cond:
            slot.in_call = None
            self._cond.notify_all()
            if ok:
                slot.crashes = 0
            if slot.worker is not worker:  # replaced (recycled) meanwhile: retire the old
                stale = worker
            if slot.worker is not None and not self._closed and slot not in self._idle:
                self._idle.append(slot)
                self._cond.notify()
        if stale is not None:  # stopped off the caller's thread: its answer is not delayed
            threading.Thread(
                target=self._retire, args=(stale,), name="keepwarm-worker-retire", daemon=True
            ).start()

    def _lost(self, slot: _Slot, worker: WorkerProcess) -> None:
        """``worker`` died in a call; its reader thread restarts it (``_exited``)."""
        with self._cond:
            if slot.in_call is worker:  # (the slot may already serve a restarted worker)
                slot.in_call = None
            if worker in self._retiring:  # a recycled worker, dead before its call ended
                self._retiring.remove(worker)
            self._cond.notify_all()

    # ------------------------------------------------------------------ workers

    def _start(self) -> WorkerProcess:
        worker = self._spawn()
        try:
            self._load(worker)
        except BaseException:
            worker.kill()
            raise
        return worker

    def _spawn(self) -> WorkerProcess:
        return WorkerProcess(self._new_id(), self.settings, hook=self._hook(), on_exit=self._exited)

    def _load(self, worker: WorkerProcess) -> Loaded:
        worker.wait_started()
        try:
            return worker.load(self.key, self.description)
        except WorkerDied as exc:
            raise ModelLoadError(f"model {self.name!r}: loading it, its {exc}") from None

    def _exited(self, worker: WorkerProcess) -> None:
        """On the dead worker's reader thread: restart it, at most ``max_restarts`` times
        in a row without a successful call, else the model is broken."""
        with self._cond:
            slot = next((s for s in self._slots if s.worker is worker), None)
            if slot is None or self._closed or self.broken is not None:
                return
            slot.worker = None
            if slot in self._idle:
                self._idle.remove(slot)
        why = worker.death()
        worker.kill()  # closes the server's ends
        log.warning("model %r: %s; restarting it", self.name, why)
        while True:
            with self._cond:
                if self._closed:
                    return
                slot.crashes += 1
                if slot.crashes > self.settings.max_restarts:
                    self._break(
                        f"its worker process died {slot.crashes} times in a row (restarted "
                        f"{self.settings.max_restarts} times, workers.max_restarts); "
                        f"the last: {why}"
                    )
                    return
                slot.restarts += 1
            if self._on_restart is not None:
                self._on_restart(self.name)
            try:
                new = self._start()
            except Exception as exc:
                why = f"restarting it failed: {type(exc).__name__}: {exc}"
                log.warning("model %r: %s", self.name, why)
                continue
            with self._cond:
                if self._closed:
                    stale: WorkerProcess | None = new
                else:
                    stale, slot.worker = None, new
                    self._idle.append(slot)
                    self._cond.notify()
            if stale is not None:
                stale.stop(_STOP_TIMEOUT)
            return

    def _break(self, reason: str) -> None:
        """Under the lock: the model cannot be served; stop everything, tell the watchers."""
        self.broken = reason
        self._cond.notify_all()
        log.error("model %r: %s", self.name, reason)
        callbacks = list(self._on_broken)
        threading.Thread(
            target=self._after_break, args=(callbacks, reason), name="keepwarm-worker-broken",
            daemon=True,
        ).start()  # fmt: skip

    def _after_break(self, callbacks: list[Callable[[str], None]], reason: str) -> None:
        self.close()
        for callback in callbacks:
            callback(f"model {self.name!r}: {reason}")

    def on_broken(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` once, if the model breaks (a worker crash loop)."""
        with self._cond:
            self._on_broken.append(callback)
            reason = self.broken
        if reason is not None:
            callback(f"model {self.name!r}: {reason}")

    def recycle(self, worker_id: int) -> bool:
        """Replace the worker ``worker_id``: a new one is started and loaded first, then
        the old one finishes its call (if any) and stops. False when it is not here."""
        with self._cond:
            slot = self._slot_of(worker_id)
            if slot is None:
                return False
        new = self._start()
        with self._cond:
            old = slot.worker
            if self._closed or old is None or old.worker_id != worker_id:
                stale: WorkerProcess | None = new  # it died or was replaced meanwhile
                old = None
            else:
                stale, slot.worker = None, new
                if slot.in_call is old:
                    self._retiring.append(old)
                    old = None  # stopped when its call returns (``_checkin``)
        for worker in (stale, old):
            if worker is not None:
                self._retire(worker)
        return stale is None

    def _retire(self, worker: WorkerProcess) -> None:
        with self._cond:
            if worker in self._retiring:
                self._retiring.remove(worker)
        worker.stop(_STOP_TIMEOUT)

    def _slot_of(self, worker_id: int) -> _Slot | None:
        for slot in self._slots:
            if slot.worker is not None and slot.worker.worker_id == worker_id:
                return slot
        return None

    def infos(self) -> list[WorkerInfo]:
        with self._cond:
            found = []
            for slot in self._slots:
                worker = slot.worker
                if worker is None:
                    continue
                state = "busy" if slot.in_call is worker else "ready"
                found.append(
                    WorkerInfo(
                        worker.worker_id, worker.pid, (self.key,), slot.restarts, state,
                        dict(worker.figures),
                    )
                )  # fmt: skip
            found += [
                WorkerInfo(w.worker_id, w.pid, (self.key,), 0, "retiring", dict(w.figures))
                for w in self._retiring
            ]
            return found

    def close(self) -> None:
        """Stop every worker (each unloads its model first); idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            # Calls already running finish (a version is closed once its leases end).
            self._cond.wait_for(lambda: not any(s.in_call for s in self._slots), _STOP_TIMEOUT)
            workers = [s.worker for s in self._slots if s.worker is not None]
            workers += self._retiring
            for slot in self._slots:
                slot.worker = None
            self._idle.clear()
            self._retiring = []
        for worker in workers:
            worker.stop(_STOP_TIMEOUT)
