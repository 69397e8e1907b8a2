"""The request side of a ``Repository``: leases, blocking, non-blocking and awaitable.

The fast path reads the serving map (``keepwarm.serving``) and takes a lease without any
lock. Everything else (a version not READY yet, on-demand loads, errors that say what
exists) is the slow path, which chooses from the listing and the manager's states
(``Catalog.choose``) and, given a timeout, waits for a change up to it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keepwarm.core.entry import Entry
from keepwarm.core.ids import ModelId
from keepwarm.core.lease import Lease
from keepwarm.core.manager import Manager
from keepwarm.core.states import State
from keepwarm.core.timeouts import check_timeout
from keepwarm.errors import DeadlineExceededError, KeepwarmError, UnavailableError
from keepwarm.loading import RuntimeSpec
from keepwarm.model import LeasedModel
from keepwarm.repository_catalog import Catalog
from keepwarm.serving import ServingMap, Target

Version = int | str | None
# Looks at a version that was chosen READY but drained before its lease: the map has
# moved on meanwhile, so a look again finds the version that replaced it.
_LOOKS = 3


@dataclass(frozen=True)
class _Load:
    """Load ``key`` with ``spec`` (on demand) and lease it."""

    key: ModelId
    spec: RuntimeSpec


@dataclass(frozen=True)
class _Wait:
    """Wait ``wait`` seconds for a change (0: look again at once); ``error`` if in vain."""

    wait: float
    error: UnavailableError


@dataclass(frozen=True)
class _Pending:
    """Nothing to lease now: ``spec`` to load it on demand, or ``error`` to wait on."""

    key: ModelId | None
    spec: RuntimeSpec | None
    error: UnavailableError


class RepositoryRequests:
    def __init__(self, catalog: Catalog, manager: Manager, serving: ServingMap) -> None:
        self._catalog = catalog
        self._manager = manager
        self.serving = serving  # read by ``LeaseContext`` on the fast path too
        self.take = manager.take  # bound once: the hot path
        self.give = manager.give

    def route(self, name: str, version: Version) -> Target | None:
        """The serving map's READY target for a request (no lock), or None."""
        try:
            route = self.serving.routes.get(name)
        except TypeError:  # an unhashable name: the slow path says what is wrong
            return None
        if route is None:
            return None
        return route.default if version is None else route.find(version)

    def fast(self, name: str, version: Version) -> Lease | None:
        """The lock-free path: a READY version routed by the serving map."""
        target = self.route(name, version)
        if target is not None and self.take(target.entry):
            return Lease(target.entry, target.model, self.give)
        return None

    def try_acquire(self, name: str, version: Version = None) -> Lease | None:
        lease = self.fast(name, version)
        if lease is not None:
            return lease
        for _ in range(_LOOKS):
            found = self._look(name, version)
            if isinstance(found, Lease):
                return found
            if found.key is not None and found.spec is None:
                continue  # chosen READY, drained before its lease: look again
            return None
        return None

    def acquire(self, name: str, version: Version = None, *, timeout: float | None = None) -> Lease:
        lease = self.fast(name, version)
        if lease is not None:
            return lease
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        for looks in itertools.count(1):
            step = self._next(name, version, deadline, looks, timeout)
            if isinstance(step, Lease):
                return step
            if isinstance(step, _Load):  # on demand: the manager loads it
                lease = self._manager.acquire(step.key, step.spec, timeout=_left(deadline))
                return _named(lease, step.key)
            if step.wait:  # the next look says what the wait came to
                self._manager.wait_for(self._settled(name, version), step.wait)
        raise AssertionError("unreachable")

    async def acquire_async(
        self, name: str, version: Version = None, *, timeout: float | None = None
    ) -> Lease:
        lease = self.fast(name, version)
        if lease is not None:
            return lease
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        for looks in itertools.count(1):
            step = self._next(name, version, deadline, looks, timeout)
            if isinstance(step, Lease):
                return step
            if isinstance(step, _Load):
                lease = await self._manager.acquire_async(
                    step.key, step.spec, timeout=_left(deadline)
                )
                return _named(lease, step.key)
            settled = self._settled(name, version)
            if step.wait:  # the next look says what the wait came to
                await self._manager.wait_for_async(settled, step.wait)
        raise AssertionError("unreachable")

    def _next(
        self, name: str, version: Version, deadline: float | None, looks: int, timeout: float | None
    ) -> Lease | _Load | _Wait:
        """What a blocking request does after one more look: take the lease, load on
        demand, or wait for a change (``wait`` seconds; 0: look again at once). Raises
        when there is nothing to wait for (no deadline) or the deadline has passed."""
        found = self._look(name, version)
        if isinstance(found, Lease):
            return found
        if found.spec is not None:
            assert found.key is not None
            return _Load(found.key, found.spec)
        if deadline is None or not self._catalog.settling(name, version):
            if found.key is not None and looks < _LOOKS:
                return _Wait(0.0, found.error)
            raise found.error  # nothing on its way: waiting would not change the answer
        left = deadline - time.monotonic()
        if left <= 0:
            raise _late(found.error, timeout)
        return _Wait(left, found.error)

    def _look(self, name: str, version: Version) -> Lease | _Pending:
        """One look, without waiting: a lease, or what to wait for. Raises what waiting
        cannot change (unknown model, version or label)."""
        try:
            key, load = self._catalog.choose(name, version)
        except UnavailableError as exc:
            return _Pending(None, None, exc)
        lease = self._manager.try_acquire(key)
        if lease is not None:
            return _named(lease, key)
        if load:
            model = self._catalog.listing.get(name)
            if model is not None and key.version in model.versions:
                return _Pending(key, self._catalog.spec(model, key.version), _NOT_YET)
            return _Pending(None, None, UnavailableError(f"{key} is no longer listed"))
        state = self._manager.state(key)
        what = state.value if state is not None else "gone"
        return _Pending(key, None, UnavailableError(f"{key} is {what}, not READY; retry"))

    def _settled(self, name: str, version: Version) -> Callable[[], bool]:
        """True once a look would not wait (run inside the manager's waits: no lock)."""

        def settled() -> bool:
            try:
                key, load = self._catalog.choose(name, version)
            except UnavailableError:
                return not self._catalog.settling(name, version)
            except KeepwarmError:
                return True
            if load or self._manager.state(key) is State.READY:
                return True
            return not self._catalog.settling(name, version)

        return settled


class LeaseContext:
    """``with repo.lease(...) as model``: acquires on entry, releases on exit. On the fast
    path it holds the count itself (no ``Lease`` object is made)."""

    __slots__ = ("_held", "_name", "_requests", "_timeout", "_version")

    def __init__(
        self, requests: RepositoryRequests, name: str, version: Version, timeout: float | None
    ) -> None:
        self._requests = requests
        self._name = name
        self._version = version
        self._timeout = timeout
        self._held: Entry | Lease | None = None  # an entry's count (fast path) or a Lease

    def __enter__(self) -> LeasedModel:
        requests = self._requests
        route = requests.serving.routes.get(self._name)  # ``route()``, without its frame
        if route is not None:
            version = self._version
            target = route.default if version is None else route.find(version)
            if target is not None and requests.take(target.entry):
                self._held = target.entry
                return target.model
        lease = requests.acquire(self._name, version=self._version, timeout=self._timeout)
        self._held = lease
        model: LeasedModel = lease.model
        return model

    def __exit__(self, *exc: object) -> None:
        held, self._held = self._held, None
        if isinstance(held, Lease):
            held.release()
        elif held is not None:
            self._requests.give(held)


_NOT_YET = UnavailableError("loading on demand")


def _named(lease: Lease, key: ModelId) -> Lease:
    """The manager's lease, handing out a ``LeasedModel`` that says which version answered."""
    model: Any = lease.model
    lease.model = LeasedModel(model, key.name, key.version)
    return lease


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _late(error: UnavailableError, timeout: float | None) -> DeadlineExceededError:
    within = "" if timeout is None else f" within {timeout:g} s"
    return DeadlineExceededError(f"not ready{within}: {error.message}")
