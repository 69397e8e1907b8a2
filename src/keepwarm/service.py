"""``InferenceService``: the transport-neutral operations the REST and gRPC faces call.

Live, ready, metadata, model readiness, infer, status and the repository index, over one
``Repository``. Request metrics are recorded here. A request's model runs on a thread
pool or a batch thread, never on the event loop (``service_infer``). A transport that has
threads of its own (the gRPC server) calls the ``*_blocking`` forms instead: the request
runs on its caller's thread, with no event loop and no hop. Error messages leave
through ``public`` only, which names paths relative to the repository root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from keepwarm.batching.serving import admit_request
from keepwarm.control import ControlledSource, Management
from keepwarm.core.memory import freeze_when_ready
from keepwarm.errors import KeepwarmError
from keepwarm.hop import HopPool
from keepwarm.metrics import Metrics
from keepwarm.repository import Repository
from keepwarm.service_blocking import Slots
from keepwarm.service_book import RequestBook
from keepwarm.service_errors import Scrubber
from keepwarm.service_infer import Requests
from keepwarm.service_leases import Leases
from keepwarm.service_names import check_name
from keepwarm.service_stats import Statistics
from keepwarm.service_status import StatusView
from keepwarm.signature import Signature

_SETTLING = ("LOADING", "WARMING")
RETRY_AFTER_SECONDS = 1
#: Threads that run models (to be sized by the batching issue's executors).
DEFAULT_WORKERS = min(32, 2 * (os.cpu_count() or 1) + 2)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: int
    versions: list[int]  # every READY version
    signature: Signature


class InferenceService:
    """See the module docstring. ``close()`` stops the threads (not the repository).
    ``freeze_heap``: ``gc.freeze`` whenever a version becomes READY (``core.memory``)."""

    def __init__(
        self,
        repository: Repository,
        *,
        metrics: Metrics | None = None,
        default_timeout: float | None = None,
        strict_readiness: bool = False,
        workers: int = DEFAULT_WORKERS,
        control: ControlledSource | None = None,
        management_token: str | None = None,
        load_timeout: float = 300.0,
        freeze_heap: bool = False,
    ) -> None:
        self.repository = repository
        self.management = Management(repository, control, management_token, load_timeout)
        self.load_timeout = load_timeout
        self.metrics = metrics if metrics is not None else Metrics()
        self.default_timeout = default_timeout
        self.strict_readiness = strict_readiness
        self._pool = HopPool(workers, "keepwarm-infer")
        self._scrubber = Scrubber(repository.root)
        self._leases = Leases(
            repository,
            self._pool,
            self._scrubber,
            held=self.held,
            default_timeout=default_timeout,
            load_timeout=load_timeout,
            held_now=lambda name: self.management.held().get(name),
        )
        self._stats = Statistics()
        self._book = RequestBook(self.metrics, self._stats)
        slots = Slots(workers)  # the same bound for requests run on their callers' threads
        requests = Requests(self._leases, self._book, self._scrubber, slots, default_timeout)
        #: ``infer(name, version, decode, encode, *, protocol, timeout, disconnected,
        #: decoded)`` and ``infer_blocking(..., call)``: see ``service_infer.Requests``.
        self.infer = requests.infer
        self.infer_blocking = requests.infer_blocking
        self._view = StatusView(
            repository,
            self._stats,
            held=self.held,
            held_all=self.management.held,
            public=self.public,
        )
        self._started = False
        # A server's heap: frozen once a version is READY (no full collections walking
        # the models' objects under load); an unload's collection thaws it.
        self._unfreeze = repository.subscribe(freeze_when_ready) if freeze_heap else None

    # ------------------------------------------------------------------ health

    def live(self) -> bool:
        return True

    def started(self) -> None:
        """The server's start-up scans are done: readiness may now be answered yes."""
        self._started = True

    def ready(self) -> bool:
        """Ready once started and no version is loading (nor FAILED, with
        ``strict_readiness``), and until shutdown begins."""
        if self._book.draining or not self._started:
            return False
        blocking = (*_SETTLING, "FAILED") if self.strict_readiness else _SETTLING
        return not any(
            state in blocking
            for versions in self._view.states().values()
            for state, _ in versions.values()
        )

    def server_metadata(self) -> dict[str, Any]:
        from keepwarm import __version__

        return {
            "name": "keepwarm",
            "version": __version__,
            "extensions": ["binary_tensor_data", "model_repository", "statistics"],
        }

    # ------------------------------------------------------------------ models

    def versions(self, name: str) -> list[tuple[int, str, str]]:
        """(version, state, reason) for each version of ``name``, oldest first; a model
        the repository API holds unloaded has none (``held`` says why)."""
        return self._view.versions(name)

    def model_status(self, name: str) -> tuple[list[tuple[int, str, str]], str | None]:
        """``versions(name)``, and what is wrong with its ``model.toml`` now, or None."""
        return self._view.model(name)

    def model_ready(self, name: str, version: str | None) -> bool:
        return self._view.model_ready(name, version)

    async def model_info(
        self, name: str, version: str | None, timeout: float | None = None
    ) -> ModelInfo:
        """The signature of the version a request for ``name``/``version`` would get (a
        version still loading waited for up to ``timeout`` seconds, else the default)."""
        seconds = self.default_timeout if timeout is None else timeout
        return await self._leases.run(
            name, version, seconds, lambda model, _d, _s: self._info(model)
        )

    def model_info_blocking(self, name: str, version: str | None) -> ModelInfo:
        """``model_info`` on the caller's thread."""
        lease = self._leases.acquire(name, version, self.default_timeout)
        try:
            return self._info(lease.model)
        finally:
            lease.release()

    def _info(self, model: Any) -> ModelInfo:
        ready = [v for v, state, _ in self.versions(model.name) if state == "READY"]
        return ModelInfo(model.name, model.version, ready, model.signature)

    def statistics(self, name: str | None, version: str | None) -> list[dict[str, Any]]:
        """Triton's statistics extension: every version of ``name`` (or of every model)."""
        return self._view.statistics(name, version)

    def held(self, name: str) -> str | None:
        """Why the repository API keeps ``name`` unloaded, or None."""
        return self.management.held().get(check_name(name))

    def index(self, *, ready_only: bool = False) -> list[dict[str, Any]]:
        """The repository extension's index (see ``StatusView.index``)."""
        return self._view.index(ready_only=ready_only)

    # ------------------------------------------------------------------- infer

    def refuse_when_overloaded(self, name: str) -> None:
        """``UnavailableError`` (503 + Retry-After) when every loaded version of ``name``
        has a full batching queue: transports call it before reading the request body.
        Else, on an event loop, a place is reserved for the request until ``infer`` queues
        it (see ``batching.serving.admit_request``)."""
        admit_request(name)

    def public(self, text: str) -> str:
        """``text`` with files named relative to the repository root (see ``Scrubber``)."""
        return self._scrubber.public(text)

    def _scrubbed(self, exc: KeepwarmError) -> KeepwarmError:
        return self._scrubber.scrubbed(exc)

    # -------------------------------------------------------------- management

    async def load(self, name: str, presented: str | None) -> None:
        """Serve ``name`` (again) through the repository API; returns once it can serve."""
        try:
            await self.management.load(check_name(name), presented)
        except KeepwarmError as exc:
            raise self._scrubbed(exc) from None

    async def unload(self, name: str, presented: str | None) -> None:
        """Stop serving ``name`` (its versions drain) until it is loaded again."""
        await self.management.unload(check_name(name), presented)

    def load_blocking(self, name: str, presented: str | None) -> None:
        """``load`` on the caller's thread."""
        try:
            self.management.load_blocking(check_name(name), presented)
        except KeepwarmError as exc:
            raise self._scrubbed(exc) from None

    def unload_blocking(self, name: str, presented: str | None) -> None:
        """``unload`` on the caller's thread."""
        self.management.unload_blocking(check_name(name), presented)

    # ---------------------------------------------------------------- shutdown

    def begin_shutdown(self) -> None:
        """Readiness fails at once and new inference requests are refused; requests
        already received complete."""
        self._book.drain()

    async def wait_idle(self, timeout: float) -> bool:
        """After ``begin_shutdown``: wait until no request is in flight; False on timeout."""
        return await self._book.wait_idle(timeout)

    @property
    def shutting_down(self) -> bool:
        return self._book.draining

    def close(self) -> None:
        if self._unfreeze is not None:
            self._unfreeze()
        self._pool.close()
