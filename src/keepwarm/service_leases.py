"""How a request gets the version it asks for: a lease from the repository (a version still
loading is waited for up to the request's deadline, else up to the load timeout), refused
while the repository API holds the model unloaded, errors made public. ``run`` takes the
lease on the event loop and runs the request's work on a worker thread; ``acquire``
takes it on the caller's thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from keepwarm.batching.serving import Holding
from keepwarm.errors import DeadlineExceededError, KeepwarmError, UnavailableError
from keepwarm.hop import HopPool, Job
from keepwarm.repository import Repository
from keepwarm.service_errors import Scrubber
from keepwarm.service_names import parse_version

T = TypeVar("T")


class Held:
    """A lease held by a request's work on a worker thread: ``close()`` gives it back,
    once; ``pop_all()`` hands it on, as another ``Held`` (a request queued for its batch
    takes it over). What ``ExitStack`` does for this, without its cost on every request
    (a callback list, a context manager; ``pop_all`` and ``close`` through an
    ``ExitStack`` were 2.6% of the event loop's samples at 4 clients, batching on)."""

    __slots__ = ("_lease",)

    def __init__(self, lease: Any) -> None:
        self._lease = lease

    def pop_all(self) -> Held:
        lease, self._lease = self._lease, None
        return Held(lease)

    def close(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()


def check_deadline(deadline: float | None) -> None:
    """``DeadlineExceededError`` when ``deadline`` (``time.monotonic()``) has passed."""
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceededError("the request's deadline passed before it could run")


class Leases:
    """See the module docstring. ``held(name)``: why the repository API keeps ``name``
    unloaded, or None."""

    def __init__(
        self,
        repository: Repository,
        pool: HopPool,
        scrubber: Scrubber,
        *,
        held: Callable[[str], str | None],
        default_timeout: float | None,
        load_timeout: float,
        held_now: Callable[[str], str | None] | None = None,
    ) -> None:
        self.repository = repository
        self.pool = pool
        self.scrubber = scrubber
        self.held = held
        #: ``held`` without the name's check, for ``take_ready`` (a name it finds nothing
        #: for goes on to ``take``, whose ``held`` checks it)
        self.held_now = held if held_now is None else held_now
        self.default_timeout = default_timeout
        self.load_timeout = load_timeout

    def acquire(self, name: str, version: str | None, seconds: float | None) -> Any:
        """A lease on the version asked for, taken on this thread (waiting up to
        ``seconds``, or the load timeout, for a version still loading)."""
        self._refuse_held(name)
        wanted = parse_version(version)
        try:
            return self.repository.acquire(
                name, wanted, timeout=self.load_timeout if seconds is None else seconds
            )
        except KeepwarmError as exc:
            raise self.scrubber.scrubbed(exc) from None

    def take_ready(
        self, name: str, version: str | None, timeout: float | None
    ) -> tuple[Any, float | None] | None:
        """``take`` with no wait and no coroutine, when the version asked for is READY now
        (the repository's lock-free look); None otherwise, and ``take`` says why or waits
        (an unknown model's error included: ``take``'s own)."""
        if self.held_now(name) is not None:
            return None
        try:
            lease = self.repository.try_acquire(name, parse_version(version))
        except KeepwarmError:
            return None
        if lease is None:
            return None
        seconds = self.default_timeout if timeout is None else timeout
        return lease, None if seconds is None else time.monotonic() + seconds

    async def take(
        self, name: str, version: str | None, timeout: float | None
    ) -> tuple[Any, float | None]:
        """A lease on the version asked for, taken on the event loop (``acquire_async``
        never blocks it; a version still loading is waited for up to the deadline: 504
        after it), and the request's deadline (``time.monotonic()``; None: none)."""
        self._refuse_held(name)
        wanted = parse_version(version)
        seconds = self.default_timeout if timeout is None else timeout
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            # Without a deadline a loading version is still waited for, up to the load timeout.
            lease = await self.repository.acquire_async(
                name, wanted, timeout=self.load_timeout if seconds is None else seconds
            )
        except KeepwarmError as exc:
            raise self.scrubber.scrubbed(exc) from None
        return lease, deadline

    async def run(
        self,
        name: str,
        version: str | None,
        timeout: float | None,
        run: Callable[[Any, float | None, Holding], T],
        abandoned: Callable[[T], None] | None = None,
    ) -> T:
        """``run(leased_model, deadline, lease)`` on a worker thread under a lease taken
        on the event loop (``take``), errors made public: see ``hop``."""
        lease, deadline = await self.take(name, version, timeout)
        return await self.hop(name, lease, deadline, run, abandoned)

    async def hop(
        self,
        name: str,
        lease: Any,
        deadline: float | None,
        run: Callable[[Any, float | None, Holding], T],
        abandoned: Callable[[T], None] | None = None,
    ) -> T:
        """``run(leased_model, deadline, lease)`` on a worker thread; ``lease`` is given
        back when ``run`` returns, on that thread, unless ``run`` takes it over.
        Cancelled while ``run`` runs (a client that went away), its result is handed to
        ``abandoned`` when it returns (an error needs nothing: the worker let go of its
        lease). ``start`` and ``ended`` are its halves, for a caller that awaits the job
        itself (``service_infer``: one coroutine less per request)."""
        job = self.start(lease, deadline, run)
        try:
            return await job.waiter
        except BaseException as exc:
            raised = self.ended(name, lease, job, exc, abandoned)
            if raised is exc:
                raise
            raise raised from None

    def start(
        self, lease: Any, deadline: float | None, run: Callable[[Any, float | None, Holding], T]
    ) -> Job[T]:
        """``hop``'s first half: ``run`` handed to a worker thread; ``await job.waiter``,
        and hand what it raises to ``ended``."""

        def work() -> T:
            # Given back when ``run`` returns, on the thread that ran it (never under a
            # running model), unless ``run`` takes it over (a request queued for its batch).
            held = Held(lease)
            try:
                check_deadline(deadline)
                return run(lease.model, deadline, held)
            finally:
                held.close()

        try:
            return self.pool.submit(work)
        except BaseException:
            lease.release()
            raise

    def ended(
        self,
        name: str,
        lease: Any,
        job: Job[T],
        exc: BaseException,
        abandoned: Callable[[T], None] | None = None,
    ) -> BaseException:
        """``hop``'s second half, for what awaiting ``job`` raised: what to raise instead
        (a cancellation itself, once the job is let go: see ``hop``; errors made public)."""
        if isinstance(exc, asyncio.CancelledError):
            if job.cancel():  # it never started: its lease is given back here
                lease.release()
            elif abandoned is not None:
                job.then(abandoned)
            return exc
        if isinstance(exc, KeepwarmError):
            return self.scrubber.scrubbed(exc)
        if isinstance(exc, Exception):
            return self.scrubber.translated(name, exc)
        return exc

    def _refuse_held(self, name: str) -> None:
        why = self.held(name)
        if why is not None:
            raise held_error(name, why)


def held_error(name: str, why: str) -> UnavailableError:
    """What a request for a model the repository API holds unloaded gets (``why``: the
    reason it is held), its status too."""
    return UnavailableError(
        f"model {name!r} is {why}; load it through the repository API (REST: POST "
        f"/v2/repository/models/{name}/load; gRPC: RepositoryModelLoad)"
    )
