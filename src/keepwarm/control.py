"""Model control through the repository API, as in Triton: a source that wraps the
repository's own and filters its listing.

``poll`` (the default): every model on disk is served, except those unloaded through the
API, which stay unloaded until loaded through the API again (or a restart). ``explicit``:
only models loaded through the API are served. Leaving a model out of the listing is
what unloads it: the repository drains a model gone from its listing.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import Callable, Iterable
from typing import Any

from keepwarm.errors import (
    InvalidInputError,
    ModelNotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from keepwarm.sources.listing import Listing, Source

UNLOADED_BY_API = "unloaded by API"
NOT_LOADED_EXPLICIT = "not loaded (model control is explicit: load it through the API)"


class ControlledSource:
    """``scan()`` is the wrapped source's, without the models the API holds back."""

    def __init__(self, source: Source, mode: str) -> None:
        if mode not in ("poll", "explicit"):
            raise InvalidInputError(f"model control {mode!r}: expected 'poll' or 'explicit'")
        self._source = source
        self.mode = mode
        self._lock = threading.Lock()
        self._loaded: set[str] = set()  # explicit: what the API loaded
        self._unloaded: set[str] = set()  # poll: what the API unloaded
        self._loading: dict[str, str] = {}  # loaded by the API, not yet listed: held why
        self._on_disk: frozenset[str] = frozenset()

    # The rest of a repository source, the wrapped source's own.

    @property
    def location(self) -> str:
        return self._source.location

    @property
    def skipped(self) -> list[str]:
        return self._source.skipped

    @property
    def watchable(self) -> bool:
        return self._source.watchable

    def watch(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        self._source.watch(stop, on_change)

    def scan(self) -> Listing:
        listing = self._source.scan()
        with self._lock:
            self._on_disk = frozenset(listing)
            return {name: model for name, model in listing.items() if self._serves(name)}

    def _serves(self, name: str) -> bool:
        if self.mode == "explicit":
            return name in self._loaded
        return name not in self._unloaded

    def load(self, name: str) -> None:
        """Serve ``name`` again (from the next scan). A name held until now stays held
        (``held``) until ``listed(name)``: until the repository has scanned, it does not
        know the name, and a request let through meanwhile would be its 404."""
        with self._lock:
            if name not in self._on_disk:
                raise ModelNotFoundError(f"model {name!r} is not in the repository")
            if not self._serves(name):
                self._loading[name] = self._why(name)
            self._loaded.add(name)
            self._unloaded.discard(name)

    def listed(self, name: str) -> bool:
        """The repository has scanned since ``load(name)``: ``name`` is held no more.
        Whether the scan found it on disk."""
        with self._lock:
            self._loading.pop(name, None)
            return name in self._on_disk

    def unload(self, name: str) -> None:
        """Stop serving ``name`` (from the next scan) until ``load``."""
        with self._lock:
            if name not in self._on_disk:
                raise ModelNotFoundError(f"model {name!r} is not in the repository")
            self._loaded.discard(name)
            self._unloaded.add(name)

    def held(self) -> dict[str, str]:
        """Models on disk that the API keeps unloaded, and why."""
        with self._lock:
            held = {name: self._why(name) for name in self._on_disk if not self._serves(name)}
            return dict(sorted({**held, **self._loading}.items()))

    def _why(self, name: str) -> str:
        return UNLOADED_BY_API if name in self._unloaded else NOT_LOADED_EXPLICIT


class Management:
    """The repository API: the token check, and load/unload through a ``ControlledSource``
    (``control`` None: the API is off)."""

    def __init__(
        self,
        repository: Any,
        control: ControlledSource | None,
        token: str | None,
        load_timeout: float,
    ) -> None:
        self._repository = repository
        self._control = control
        self._token = token
        self._load_timeout = load_timeout

    def held(self) -> dict[str, str]:
        return {} if self._control is None else self._control.held()

    def authorize(self, presented: str | None) -> ControlledSource:
        """The source to act on, if the API is on and ``presented`` is the token
        (compared in constant time)."""
        if self._token is None or self._control is None:
            raise PermissionDeniedError(
                "the repository API is off; start the server with --management-api and a "
                "token (KEEPWARM_MANAGEMENT_TOKEN or --token-file)"
            )
        if not presented:
            raise UnauthenticatedError(
                "the repository API needs the management token: 'Authorization: Bearer TOKEN'"
            )
        if not hmac.compare_digest(presented.encode(), self._token.encode()):
            raise PermissionDeniedError("the management token is wrong")
        return self._control

    async def load(self, name: str, presented: str | None) -> None:
        await asyncio.to_thread(self.load_blocking, name, presented)

    async def unload(self, name: str, presented: str | None) -> None:
        await asyncio.to_thread(self.unload_blocking, name, presented)

    def load_blocking(self, name: str, presented: str | None) -> None:
        """Serve ``name`` again; returns once it can serve (a version that fails to load:
        its error; one still loading: up to the load timeout). A model the repository's
        scan does not find (deleted since the last one) is not found."""
        control = self.authorize(presented)
        control.load(name)
        try:
            self._repository.refresh()
        finally:
            found = control.listed(name)
        if not found:
            raise ModelNotFoundError(f"model {name!r} is not in the repository")
        # A lease, as a request's: a version loading is waited for, one that failed to
        # load is its error at once (``wait_ready`` waited out the load timeout, 300 s,
        # for a retry, and then said so with the model's status as Python)
        self._repository.acquire(name, None, timeout=self._load_timeout).release()

    def unload_blocking(self, name: str, presented: str | None) -> None:
        """Stop serving ``name`` until it is loaded again."""
        self.authorize(presented).unload(name)
        self._repository.refresh()


def check_repository(name: str) -> None:
    """``ModelNotFoundError`` for a repository name: a server serves one repository, and a
    client addresses it with no name (as Triton's clients do: Triton refuses any name).
    A name that is not the server's own is never served from its repository (the index
    would list models of another than the one asked for, an unload unload one)."""
    if name:
        raise ModelNotFoundError(
            f"repository {name!r} is not served here: this server serves one repository, "
            "addressed with no name (POST /v2/repository/index, or an empty repository_name)"
        )


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` value (REST header or gRPC metadata)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


#: The repository API's parameters that keepwarm honours, per action: a load takes none
#: (Triton's ``config`` and ``file:`` overrides: a model loads as its directory and
#: ``model.toml`` say), an unload ``unload_dependents`` (no model has dependents here).
REPOSITORY_PARAMETERS = {"load": frozenset(), "unload": frozenset({"unload_dependents"})}


def check_parameters(action: str, names: Iterable[str]) -> None:
    """``InvalidInputError`` naming the parameters of a repository ``action`` ("load" or
    "unload") that keepwarm would otherwise ignore."""
    unknown = sorted(set(names) - REPOSITORY_PARAMETERS[action])
    if unknown:
        raise InvalidInputError(
            f"{action} parameters {unknown} are not supported: a model loads as its "
            "directory and model.toml say"
        )
