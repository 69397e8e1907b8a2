"""``Repository``: a manager whose source is a model repository.

``<root>/<model>/<version>/`` (versions are positive integers), with an optional
``<root>/<model>/model.toml`` (see ``keepwarm.config``). Scans (polled, and watched when
the source can be) emit the whole listing; ``Reconciler`` turns one listing into manager
calls: load the versions the policy wants, keep the old one serving until a new one is
READY (availability-preserving), drain versions that are gone, and forget them once
unloaded. A scan that fails keeps the last good listing in force (and says why in
``status()`` and the log); only a listing that succeeds and lacks a model removes it.

The parts: ``Catalog`` (listing, specs, version choice), ``ServingMap`` (the lock-free
routing table requests read), ``RepositoryRequests`` (leases), ``repository_status``,
``repository_wait`` (``wait_ready``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from keepwarm.core.events import Event
from keepwarm.core.ids import ModelId
from keepwarm.core.lease import Lease
from keepwarm.core.manager import Manager
from keepwarm.core.states import State
from keepwarm.errors import KeepwarmError
from keepwarm.repository_args import check_root, check_switch
from keepwarm.repository_catalog import Catalog
from keepwarm.repository_reconcile import Reconciler, log_config_changes
from keepwarm.repository_requests import LeaseContext, RepositoryRequests, Version
from keepwarm.repository_status import RepositoryStatus, repository_status
from keepwarm.repository_wait import wait_ready
from keepwarm.serving import ServingMap
from keepwarm.settings import Settings
from keepwarm.sources.listing import Source, open_source

log = logging.getLogger("keepwarm.repository")


class Repository:
    """Serve every model of a repository directory, following new versions as they land.

    ``root`` is a directory, a ``file://`` URL, or a remote store (``s3://bucket/prefix``).
    ``on_demand=False`` loads what each model's version policy wants; ``on_demand=True``
    loads a version on its first use and evicts idle ones under ``max_bytes`` (pinned
    models are loaded at once and never evicted). ``allow_unsafe=True`` lets the server
    run code shipped inside model directories: pickle files and Python models (classes
    named by a version's ``keepwarm.toml``). Leave it off unless everyone who can write
    to the repository may run code in this process. Use it as a context manager.

    ``settings`` (``Settings.from_env()`` when None) gives every default; the keyword
    arguments override its fields (None: the settings' value; ``max_bytes`` as bytes,
    ``"8GiB"`` or a share of RAM such as ``0.5``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        settings: Settings | None = None,
        poll_seconds: float | None = None,
        max_bytes: int | float | str | None = None,
        max_models: int | None = None,
        on_demand: bool | None = None,
        load_timeout: float | None = None,
        budget_timeout: float | None = None,
        drain_timeout: float | None = None,
        watch: bool | None = None,
        source: Source | None = None,
        allow_unsafe: bool | None = None,
    ) -> None:
        self.root = check_root(root)
        for switch, value in (("on_demand", on_demand), ("watch", watch)):
            check_switch(switch, value)
        check_switch("allow_unsafe", allow_unsafe)  # it lets model directories run code
        self.settings = Settings.given(
            settings,
            poll_seconds=poll_seconds,  # (the names are each one section's field)
            max_bytes=max_bytes,
            max_models=max_models,
            on_demand=on_demand,
            load_timeout=load_timeout,
            budget_timeout=budget_timeout,
            drain_timeout=drain_timeout,
            watch=watch,
            allow_unsafe=allow_unsafe,
        )
        loading = self.settings.loading
        self.poll_seconds = self.settings.repository.poll_seconds
        self.on_demand = self.settings.repository.on_demand
        self.allow_unsafe = loading.allow_unsafe
        self.drain_timeout = loading.drain_timeout
        self._watch = self.settings.repository.watch
        self._source: Source = (
            source if source is not None else open_source(self.root, self.settings.downloads)
        )
        self.manager = Manager.from_settings(self.settings)
        self._catalog = Catalog(self.manager, self.settings, location=self.root)
        self._listed = False  # a scan has succeeded
        self._serving = ServingMap(on_demand=self.on_demand)
        self._requests = RepositoryRequests(self._catalog, self.manager, self._serving)
        self._reconciler = Reconciler(self._catalog, self.manager, on_demand=self.on_demand)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unwatch = self.manager.watch(self._serving.on_transition)
        self._unsubscribe = self.manager.events.subscribe(self._on_event)

    # ------------------------------------------------------------------ requests

    def acquire(self, name: str, version: Version = None, *, timeout: float | None = None) -> Lease:
        """A lease on one version of ``name``: ``version`` is a number, a label, or None
        for the default (the highest READY version, or what ``model.toml`` names).
        ``lease.model`` is a ``LeasedModel``; release it (or use ``with``). With a
        ``timeout``, a version still loading is waited for, up to it
        (``DeadlineExceededError``); without one, ``UnavailableError`` at once."""
        return self._requests.acquire(name, version, timeout=timeout)

    def try_acquire(self, name: str, version: Version = None) -> Lease | None:
        """A lease when that version is READY now, else None; never blocks nor loads.
        Raises what waiting cannot change (an unknown model, version or label)."""
        return self._requests.try_acquire(name, version)

    async def acquire_async(
        self, name: str, version: Version = None, *, timeout: float | None = None
    ) -> Lease:
        """``acquire`` for an event loop: never blocks the loop; cancelled, it leaves no
        lease and no waiter behind. On demand, a load that finds no room in the budget
        does not wait for leases to end: ``ResourceExhaustedError`` at once."""
        return await self._requests.acquire_async(name, version, timeout=timeout)

    def lease(self, name: str, version: Version = None, *, timeout: float | None = None) -> Any:
        """``with repo.lease(name, version) as model:`` holds that version for the block."""
        return LeaseContext(self._requests, name, version, timeout)

    def wait_ready(self, name: str, version: Version = None, timeout: float | None = 60.0) -> int:
        """Wait until ``name`` (that version, or its default) can serve; return the version.

        In on-demand mode this loads the version (as a request would); a model or version
        not listed yet is waited for too."""
        return wait_ready(self._requests, self._catalog, name, version, timeout)

    def status(self, *, processes: bool = False) -> RepositoryStatus:
        """Every model and version (``keepwarm.repository_status``): the manager's state
        and reason, the listing's view of the files (``disk``: taken, waiting for files,
        gone from disk), why a wanted version could not start, memory figures, and
        ``listing_error`` when the last scan failed. ``.to_dict()`` for JSON.
        ``processes``: also each process's PSS and unreclaimed bytes (slower)."""
        return repository_status(self._catalog, processes=processes)

    @property
    def listing_error(self) -> str | None:
        """Why the last scan failed (the listing before it stays in force); None if it worked."""
        return self._catalog.listing_error

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every state change; returns the unsubscribe function."""
        return self.manager.events.subscribe(callback)

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> Repository:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Scan once, start loading, and start the poll (and watch) threads."""
        self.refresh()
        self._spawn(self._poll_loop, "keepwarm-poll")
        if self._watch and self._source.watchable:
            self._spawn(self._watch_loop, "keepwarm-watch")

    def close(self) -> None:
        """Stop watching, drain in-flight requests (up to ``drain_timeout``), unload all."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._unsubscribe()
        self.manager.close(self.drain_timeout)
        self._unwatch()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._refresh_logged()

    def _watch_loop(self) -> None:
        try:
            self._source.watch(self._stop, self._refresh_logged)
        except Exception:
            log.exception("watching %s failed; polling continues", self.root)

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except KeepwarmError:
            pass  # kept in ``listing_error`` and logged once by ``refresh``
        except Exception:  # a bad scan must not stop the loop; the next one retries
            log.exception("scanning %s failed", self.root)

    # ------------------------------------------------------------ reconciliation

    def refresh(self) -> None:
        """Scan the repository now and act on what it lists. When the scan fails, the last
        good listing stays in force, the error is kept for ``status()`` (logged once) and
        raised."""
        catalog = self._catalog
        try:
            listing = self._source.scan()
        except KeepwarmError as exc:
            if exc.message != catalog.listing_error:
                kept = "the last good listing" if self._listed else "nothing (none listed yet)"
                log.warning(
                    "listing %s failed; serving on with %s: %s", self.root, kept, exc.message
                )
            catalog.listing_error = exc.message
            raise
        if catalog.listing_error is not None:
            log.warning("listing %s works again", self.root)
        catalog.listing_error = None
        self._listed = True
        with catalog.lock:
            # Models gone from the listing too: their versions drain, then are forgotten.
            names = set(catalog.listing) | set(listing) | {key.name for key in catalog.specs}
            before = catalog.listing
            catalog.listing = listing  # replaced whole, never mutated: read without a lock
            self._serving.set_listing(listing)
            # said once status reads the new listing: a reader who saw the line sees it
            log_config_changes(before, listing)
            for name in sorted(names):
                self._reconciler.reconcile(name)
        self.manager.changed()  # requests waiting for a version look again

    def _on_event(self, event: Event) -> None:
        # A version became READY (or failed): old versions may now go, or must stay.
        if self._stop.is_set():
            return
        key = event.key
        if event.kind != "state" or not isinstance(key, ModelId):
            return
        if event.state in (State.READY, State.FAILED):
            with self._catalog.lock:
                self._reconciler.reconcile(key.name)
        elif event.state is State.UNLOADED:  # a version gone from disk may be forgotten now
            with self._catalog.lock:
                self._reconciler.forget_gone(key.name)
