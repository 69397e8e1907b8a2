"""``Repository``: a manager whose source is a model-repository directory.

``<root>/<model>/<version>/`` (versions are positive integers), with an optional
``<root>/<model>/model.toml`` (see ``keepwarm.config``). Scans (polled, and watched where
``watchfiles`` is installed) emit the whole listing; ``_reconcile`` turns one listing into
manager calls: load the versions the policy wants, keep the old one serving until a new one
is READY (availability-preserving), drain versions that are gone, and forget them once
unloaded. Requests and queries (``lease``, ``wait_ready``, ``status``) are in
``keepwarm.repository_view``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from keepwarm.core.backoff import Backoff
from keepwarm.core.events import Event
from keepwarm.core.ids import ModelId
from keepwarm.core.manager import Manager
from keepwarm.core.states import State
from keepwarm.core.version_policy import aspired_versions, keep_for_availability
from keepwarm.errors import KeepwarmError
from keepwarm.loading import RuntimeSpec
from keepwarm.repository_view import RepositoryView
from keepwarm.settings import DownloadSettings, Settings
from keepwarm.sources.filesystem import FilesystemSource, ModelListing
from keepwarm.sources.resolve import local_path_or_none

log = logging.getLogger("keepwarm.repository")


class Repository(RepositoryView):
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
        source: Any = None,
        allow_unsafe: bool | None = None,
    ) -> None:
        self.root = os.fspath(root)
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
        budget, loading = self.settings.budget, self.settings.loading
        self.poll_seconds = self.settings.repository.poll_seconds
        self.on_demand = self.settings.repository.on_demand
        self.allow_unsafe = loading.allow_unsafe
        self.drain_timeout = loading.drain_timeout
        self._watch = self.settings.repository.watch
        self._source = (
            source if source is not None else _make_source(self.root, self.settings.downloads)
        )
        self.manager = Manager(
            max_models=budget.max_models,
            max_bytes=budget.max_bytes,
            load_timeout=loading.load_timeout,
            budget_timeout=budget.budget_timeout,
            patience=budget.patience,
            backoff=Backoff(loading.retry_initial, loading.retry_max),
        )
        self._lock = threading.RLock()
        self._listing: dict[str, ModelListing] = {}
        self._specs: dict[ModelId, RuntimeSpec] = {}
        self._refused: dict[ModelId, str] = {}
        self._scan_error: str | None = None  # the last failed scan's, logged once
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unsubscribe = self.manager.events.subscribe(self._on_event)

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
        if self._watch and isinstance(self._source, FilesystemSource):
            self._spawn(self._watch_loop, "keepwarm-watch")

    def close(self) -> None:
        """Stop watching, drain in-flight requests (up to ``drain_timeout``), unload all."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._unsubscribe()
        self.manager.close(self.drain_timeout)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except KeepwarmError as exc:  # e.g. the store cannot be listed: said once
                if exc.message != self._scan_error:
                    log.warning("scanning %s failed: %s", self.root, exc.message)
                self._scan_error = exc.message
                continue
            except Exception:  # a bad scan must not stop the loop; the next one retries
                log.exception("scanning %s failed", self.root)
            self._scan_error = None

    def _watch_loop(self) -> None:
        try:
            import watchfiles
        except ImportError:
            return  # polling alone
        assert isinstance(self._source, FilesystemSource)
        try:
            for _changes in watchfiles.watch(
                self._source.root,  # a local path, whatever the spelling of ``root``
                stop_event=self._stop,
                debounce=200,
                rust_timeout=500,
                yield_on_timeout=False,
                raise_interrupt=False,
            ):
                self.refresh()
        except Exception:
            log.exception("watching %s failed; polling continues", self.root)

    # ------------------------------------------------------------ reconciliation

    def refresh(self) -> None:
        """Scan the repository now and act on what it lists."""
        listing = self._source.scan()
        with self._lock:
            # Models gone from the listing too: their versions drain, then are forgotten.
            names = set(self._listing) | set(listing) | {key.name for key in self._specs}
            self._listing = listing  # replaced whole, never mutated: readable without the lock
            for name in sorted(names):
                self._reconcile_safely(name)

    def _on_event(self, event: Event) -> None:
        # A version became READY (or failed): old versions may now go, or must stay.
        if self._stop.is_set():
            return
        key = event.key
        if event.kind != "state" or not isinstance(key, ModelId):
            return
        if event.state in (State.READY, State.FAILED):
            with self._lock:
                self._reconcile_safely(key.name)
        elif event.state is State.UNLOADED:  # a version gone from disk may be forgotten now
            with self._lock:
                self._forget_gone(key.name)

    def _reconcile_safely(self, name: str) -> None:
        # One model whose reconciliation fails (a version that cannot start is handled in
        # ``_ensure``) must not stop the others from being reconciled; the next scan retries.
        try:
            self._reconcile(name)
        except KeepwarmError as exc:
            log.warning("model %r: %s", name, exc.message)

    def _reconcile(self, name: str) -> None:
        model = self._listing.get(name)
        resident = {
            key.version
            for key in self._known(name)
            if self.manager.state(key) in (State.LOADING, State.WARMING, State.READY)
        }
        wanted: set[int] = set()
        if model is not None and not model.blocked:
            config = model.config
            available = {v for v, listing in model.versions.items() if listing.complete}
            aspired = aspired_versions(available, config.policy, config.labels)
            # Still on disk, though perhaps no longer judged whole (being rewritten, or a
            # model.toml naming another runtime): a READY version keeps serving until
            # something else is READY.
            ready = self._ready(name, model)
            wanted = aspired | keep_for_availability(aspired, ready, set(model.versions))
            if not self.on_demand or config.pinned:
                for version in sorted(aspired):
                    self._ensure(ModelId(name, version), model)
            else:
                wanted |= available  # on demand: any listed version may be asked for
        for key in [k for k in self._refused if k.name == name and k.version not in wanted]:
            del self._refused[key]
        for version in resident - wanted:
            self.manager.unload(ModelId(name, version), "no longer wanted")
        self._forget_gone(name)

    def _ensure(self, key: ModelId, model: ModelListing) -> None:
        """Start loading ``key`` if it is not loaded. A version that cannot start (say,
        larger than the whole budget) does not stop the others; why is kept for
        ``status()`` and logged once per distinct reason (it is tried again every scan)."""
        try:
            self.manager.ensure(key, self._spec(model, key.version), pinned=model.config.pinned)
        except KeepwarmError as exc:
            if self._refused.get(key) != exc.message:
                log.warning("%s is not loaded: %s", key, exc.message)
            self._refused[key] = exc.message
        else:
            self._refused.pop(key, None)

    def _forget_gone(self, name: str) -> None:
        """Drop versions no longer on disk once they hold nothing: their spec and their
        manager entry (and so their line in ``status()``)."""
        model = self._listing.get(name)
        on_disk = model.versions if model is not None else {}
        for key in self._known(name):
            if key.version in on_disk:
                continue
            self._refused.pop(key, None)
            if self.manager.forget(key):  # not while it holds memory, a load or a request
                del self._specs[key]

    def _known(self, name: str) -> list[ModelId]:
        return [key for key in self._specs if key.name == name]


def _make_source(root: str, downloads: DownloadSettings) -> Any:
    # One URI parser for the library and the server: ``~``, ``file://localhost/...`` and
    # percent-escapes in ``file://`` URLs mean what they mean to ``keepwarm.load``.
    path = local_path_or_none(root)
    if path is None:
        from keepwarm.sources.remote_repository import RemoteSource

        return RemoteSource(root, downloads=downloads)
    return FilesystemSource(path)
