"""The worker processes serving one loaded model: one call at a time per process, a dead
process restarted (its model loaded again before it takes a request), a crash loop turned
into a broken model, and a process replaced on request (``recycle``) with no request lost.

Every wait is bounded: a worker's start by ``workers.start_timeout``, its load by
``workers.ready_timeout`` (then it is killed and the load fails), a request's wait for a
worker by its deadline and, while its workers restart, by ``start_timeout``
(``keepwarm.workers.slots``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

import numpy as np

from keepwarm.deadline import request_deadline
from keepwarm.errors import ModelLoadError, UnavailableError
from keepwarm.load_description import LoadDescription
from keepwarm.settings import WorkerSettings
from keepwarm.workers.handle import Unanswered, WorkerDied, WorkerProcess
from keepwarm.workers.messages import Loaded
from keepwarm.workers.slots import Slot, Slots, WorkerInfo

log = logging.getLogger("keepwarm.workers")

_STOP_TIMEOUT = 10.0  # seconds a stopping worker may take to unload before it is killed

__all__ = ["WorkerGroup", "WorkerInfo"]


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
        self._slots = Slots(name, settings.start_timeout)
        self._killed_in_call: set[WorkerProcess] = set()  # by close(), in a call
        self._killed_why = "was unloaded while this request ran"  # their callers are told
        self.loaded: Loaded | None = None
        spawned: list[WorkerProcess] = []
        try:
            spawned += [self._spawn() for _ in range(processes)]  # they start side by side
            while spawned:
                self.loaded = self._load(spawned[0])
                self._slots.add(spawned.pop(0))
        except BaseException:
            for worker in spawned:
                worker.kill()
            self.close()
            raise

    @property
    def broken(self) -> str | None:
        """Why the model cannot be served (a crash loop), or None."""
        return self._slots.broken

    # ------------------------------------------------------------------ calls

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        slot, worker = self._slots.checkout(request_deadline.get())
        try:
            outputs = worker.predict(self.key, inputs)
        except WorkerDied as died:
            self._slots.lost(slot, worker)
            if worker in self._killed_in_call:  # by close(): the model is gone, no restart
                raise UnavailableError(
                    f"model {self.name!r} {self._killed_why} (its worker process was stopped "
                    "in the call)"
                ) from None
            raise UnavailableError(
                f"model {self.name!r}: its {died}; the request was lost, the worker is "
                f"restarted (the model fails after {self.settings.max_restarts + 1} deaths in "
                "a row, workers.max_restarts): retry"
            ) from None
        except BaseException:
            self._checkin(slot, worker, ok=False)
            raise
        self._checkin(slot, worker, ok=True)
        return outputs

    def _checkin(self, slot: Slot, worker: WorkerProcess, *, ok: bool) -> None:
        stale = self._slots.checkin(slot, worker, ok=ok)
        if stale is not None:  # stopped off the caller's thread: its answer is not delayed
            threading.Thread(
                target=self._retire, args=(stale,), name="keepwarm-worker-retire", daemon=True
            ).start()

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
        bound = self.settings.ready_timeout
        try:
            return worker.load(self.key, self.description, timeout=bound)
        except WorkerDied as exc:
            raise ModelLoadError(f"model {self.name!r}: loading it, its {exc}") from None
        except Unanswered:
            worker.kill()
            raise ModelLoadError(
                f"model {self.name!r}: its worker process {worker.pid} did not load it within "
                f"{bound:g} s (workers.ready_timeout), and was killed"
                f"{worker.output.tail_text()}"
            ) from None

    def _exited(self, worker: WorkerProcess) -> None:
        """On the dead worker's output thread: restart it, at most ``max_restarts`` times
        in a row without a successful call, else the model is broken."""
        slot = self._slots.vacate(worker)
        if slot is None:
            return
        why = worker.death()
        worker.kill()  # closes the server's ends
        log.warning("model %r: %s; restarting it", self.name, why)
        while True:
            verdict = self._slots.crashed(slot, self.settings.max_restarts)
            if verdict is None:  # closed meanwhile
                return
            if not verdict:
                self._break(
                    f"its worker process died or failed to start {slot.crashes} times in a "
                    f"row (restarted {self.settings.max_restarts} times, "
                    f"workers.max_restarts); the last: {why}"
                )
                return
            if self._on_restart is not None:
                self._on_restart(self.name)
            try:
                new = self._start()
            except Exception as exc:
                why = f"restarting it failed: {type(exc).__name__}: {exc}"
                log.warning("model %r: %s", self.name, why)
                continue
            if not self._slots.fill(slot, new):
                new.stop(_STOP_TIMEOUT)
            return

    def _break(self, reason: str) -> None:
        """The model cannot be served: stop everything, tell the watchers."""
        callbacks = self._slots.break_(reason)
        log.error("model %r: %s", self.name, reason)
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
        reason = self._slots.watch_broken(callback)
        if reason is not None:
            callback(f"model {self.name!r}: {reason}")

    def recycle(self, worker_id: int) -> bool:
        """Replace the worker ``worker_id``: a new one is started and loaded first, then
        the old one finishes its call (if any) and stops. False when it is not here."""
        if not self._slots.serves(worker_id):
            return False
        stale, old = self._slots.swap(worker_id, self._start())
        for worker in (stale, old):
            if worker is not None:
                self._retire(worker)
        return stale is None

    def _retire(self, worker: WorkerProcess) -> None:
        self._slots.retired(worker)
        worker.stop(_STOP_TIMEOUT)

    def infos(self) -> list[WorkerInfo]:
        return self._slots.infos(self.key)

    def hurry(self, why: str | None = None) -> None:
        """Closing (now or later) waits for no running call: a worker in one is killed at
        once (a server past its drain timeout, whose requests were given their time);
        ``why`` is what their callers are told happened to the model."""
        if why is not None:
            self._killed_why = why
        self._slots.hurry()

    def close(self) -> None:
        """Unload the model in every worker, then stop them; idempotent. Calls already
        running finish first (a version is closed once its leases end), waited for up to
        ``_STOP_TIMEOUT`` (not at all after ``hurry``); a worker still in its call then is
        killed at once: it reads no stop message until its model returns, and asking cost
        a second timeout (a server with a hung model exited 20 s per such model after its
        drain timeout, not 10; now none: the server hurries its workers then). The
        model's own ``close()`` failing in a worker (``sys.exit()`` included) is raised here
        once every worker has stopped, for the closer to log; a worker that died or does
        not answer within the stop timeout is stopped (killed) all the same."""
        workers, busy = self._slots.close(_STOP_TIMEOUT)
        self._killed_in_call.update(busy)  # before the kill: their callers' errors say so
        for worker in busy:
            worker.kill()
        failure: Exception | None = None
        for worker in workers:
            if worker in busy:
                continue
            try:
                worker.unload(self.key, timeout=_STOP_TIMEOUT)
            except (WorkerDied, Unanswered):
                pass
            except Exception as exc:
                failure = failure or exc
            worker.stop(_STOP_TIMEOUT)
        if failure is not None:
            raise failure
