"""``InferenceService``: the transport-neutral operations the REST and gRPC faces call.

Live, ready, metadata, model readiness, infer, status and the repository index, over one
``Repository``. Request metrics are recorded here. A request's model runs on a thread
pool, never on the event loop; the lease is taken in the same hop. Error messages leave
through ``public`` only, which names paths relative to the repository root.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from keepwarm.batching.model import Admission
from keepwarm.batching.serving import (
    Queued,
    Ticket,
    abandon,
    admit_request,
    admitted,
    begin,
    finish,
)
from keepwarm.control import ControlledSource, Management
from keepwarm.errors import DeadlineExceededError, KeepwarmError, UnavailableError
from keepwarm.metrics import Metrics
from keepwarm.repository import Repository
from keepwarm.service_errors import Scrubber
from keepwarm.service_names import check_name, parse_version
from keepwarm.service_stats import Statistics
from keepwarm.service_status import StatusView
from keepwarm.signature import Signature

T = TypeVar("T")
Decode = Callable[[Signature], dict[str, np.ndarray]]
Encode = Callable[[str, int, dict[str, np.ndarray]], T]

_SETTLING = ("LOADING", "WARMING")
RETRY_AFTER_SECONDS = 1
#: Threads that run models (to be sized by the batching issue's executors).
DEFAULT_WORKERS = min(32, 2 * (os.cpu_count() or 1) + 2)


def _hand_over(abandoned: Callable[[T], None], future: Future[T]) -> None:
    """A worker's result whose caller was cancelled meanwhile, to ``abandoned``; an error
    needs nothing (the worker let go of its lease)."""
    if not future.cancelled() and future.exception() is None:
        abandoned(future.result())


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: int
    versions: list[int]  # every READY version
    signature: Signature


class InferenceService:
    """See the module docstring. ``close()`` stops the thread pool (not the repository)."""

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
    ) -> None:
        self.repository = repository
        self.management = Management(repository, control, management_token, load_timeout)
        self.load_timeout = load_timeout
        self.metrics = metrics if metrics is not None else Metrics()
        self.default_timeout = default_timeout
        self.strict_readiness = strict_readiness
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="keepwarm-infer")
        self._scrubber = Scrubber(repository.root)
        self._draining = False
        self._in_flight = 0
        self._idle: asyncio.Event | None = None  # made on the loop, when first draining
        self._stats = Statistics()
        self._view = StatusView(
            repository,
            self._stats,
            held=self.held,
            held_all=self.management.held,
            public=self.public,
        )
        self._started = False

    # ------------------------------------------------------------------ health

    def live(self) -> bool:
        return True

    def started(self) -> None:
        """The server's start-up scans are done: readiness may now be answered yes."""
        self._started = True

    def ready(self) -> bool:
        """Ready once started and no version is loading (nor FAILED, with
        ``strict_readiness``), and until shutdown begins."""
        if self._draining or not self._started:
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

    def model_ready(self, name: str, version: str | None) -> bool:
        return self._view.model_ready(name, version)

    async def model_info(self, name: str, version: str | None) -> ModelInfo:
        """The signature of the version a request for ``name``/``version`` would get."""

        def run(model: Any) -> ModelInfo:
            ready = [v for v, state, _ in self.versions(name) if state == "READY"]
            return ModelInfo(model.name, model.version, ready, model.signature)

        return await self._leased(name, version, self.default_timeout, lambda m, _d, _s: run(m))

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
        Else a place is reserved for the request until ``infer`` queues it (see
        ``batching.serving.admit_request``)."""
        admit_request(name)

    async def infer(
        self,
        name: str,
        version: str | None,
        decode: Decode,
        encode: Encode[T],
        *,
        protocol: str,
        timeout: float | None = None,
        disconnected: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        """Run one request: lease the version, ``decode`` the inputs against its signature,
        predict, ``encode`` the outputs; all on a worker thread. ``timeout`` (seconds,
        default: the service's) bounds the wait for the model and the queue. A batched
        model's request that had to queue is awaited here (``batching.serving``), and
        leaves the queue when ``disconnected()`` returns (the client went away)."""
        started = time.perf_counter()
        label, code = "", "OK"  # the version label only once a version answered
        admission: Admission | None = None
        self._in_flight += 1
        self.metrics.in_flight.inc()
        try:
            if self._draining:
                raise UnavailableError("the server is shutting down; retry on another server")
            admission = admitted(name)  # overload: refused at once, on the loop

            def run(model: Any, deadline: float | None, lease: ExitStack) -> T | Queued:
                nonlocal label
                label = str(model.version)
                inputs = decode(model.signature)
                if admission is not None:
                    admission.release()  # it is queued (or runs) next: counted there
                outputs = begin(model, inputs, deadline, lease, ticket)
                if isinstance(outputs, Queued):
                    return outputs
                return encode(model.name, model.version, outputs)

            def drop(left: T | Queued) -> None:  # the caller went away while ``run`` ran
                if isinstance(left, Queued):
                    abandon(left)

            ticket = Ticket()  # takes the request back if its caller goes while it waits
            try:
                result = await self._leased(name, version, timeout, run, drop)
            except asyncio.CancelledError:
                ticket.cancel()
                raise
            if not isinstance(result, Queued):
                return result
            try:
                outputs = await finish(result, disconnected)
            except KeepwarmError as exc:
                raise self._scrubbed(exc) from None
            except Exception as exc:
                raise self._scrubber.translated(name, exc) from None
            return encode(result.name, result.version, outputs)
        except KeepwarmError as exc:
            code = exc.code.value
            raise
        except asyncio.CancelledError:  # the client went away (or its deadline passed)
            code = "CANCELLED"
            raise
        finally:
            if admission is not None:
                admission.release()  # a request that failed before it was queued
            self._in_flight -= 1
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            if label:  # the request reached a version
                self.metrics.request(name, label, protocol, code, elapsed)
                self._stats.record(name, label, code == "OK", elapsed)
            else:  # names not served are not labels: clients must not grow the series
                self.metrics.request("", "", protocol, code, elapsed)
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def _leased(
        self,
        name: str,
        version: str | None,
        timeout: float | None,
        run: Callable[[Any, float | None, ExitStack], T],
        abandoned: Callable[[T], None] | None = None,
    ) -> T:
        """``run(leased_model)`` on a worker thread under a lease; errors made public.

        The lease is taken on the event loop (``acquire_async`` never blocks it, and a
        version still loading is waited for up to the deadline: 504 after it); only
        ``run`` hops to a worker thread. Cancelled while ``run`` runs (a gRPC client that
        cancelled), its result is handed to ``abandoned`` when it returns."""
        why = self.held(name)
        if why is not None:
            raise UnavailableError(
                f"model {name!r} is {why}; load it with POST /v2/repository/models/{name}/load"
            )
        wanted = parse_version(version)
        seconds = self.default_timeout if timeout is None else timeout
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            # Without a deadline a loading version is still waited for, up to the load timeout.
            lease = await self.repository.acquire_async(
                name, wanted, timeout=self.load_timeout if seconds is None else seconds
            )
        except KeepwarmError as exc:
            raise self._scrubbed(exc) from None

        def work() -> T:
            with ExitStack() as stack:
                # Given back when ``run`` returns, on the thread that ran it (never under a
                # running model), unless ``run`` takes it over (a request queued for its batch).
                stack.callback(lease.release)
                if deadline is not None and time.monotonic() > deadline:
                    raise DeadlineExceededError(
                        f"the request's deadline ({seconds:g} s) passed before it could run"
                    )
                return run(lease.model, deadline, stack)

        future = self._executor.submit(work)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if future.cancel():  # it never started: its lease is given back here
                lease.release()
            elif abandoned is not None:
                future.add_done_callback(partial(_hand_over, abandoned))
            raise
        except KeepwarmError as exc:
            raise self._scrubbed(exc) from None
        except Exception as exc:
            raise self._scrubber.translated(name, exc) from None

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

    # ---------------------------------------------------------------- shutdown

    def begin_shutdown(self) -> None:
        """Readiness fails at once and new inference requests are refused; requests
        already received complete."""
        self._draining = True
        self._idle = asyncio.Event()
        if self._in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """After ``begin_shutdown``: wait until no request is in flight; False on timeout."""
        assert self._idle is not None, "begin_shutdown first"
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def shutting_down(self) -> bool:
        return self._draining

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
