"""``Repository``: a manager whose source is a model-repository directory.

``<root>/<model>/<version>/`` (versions are positive integers), with an optional
``<root>/<model>/model.toml`` (see ``keepwarm.config``). Scans (polled, and watched where
``watchfiles`` is installed) emit the whole listing; ``_reconcile`` turns one listing into
manager calls: load the versions the policy wants, keep the old one serving until a new one
is READY (availability-preserving), drain versions that are gone.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keepwarm.core.events import Event
from keepwarm.core.ids import ModelId
from keepwarm.core.manager import Manager
from keepwarm.core.states import State
from keepwarm.core.version_policy import aspired_versions, keep_for_availability, resolve_version
from keepwarm.errors import KeepwarmError, ModelNotFoundError, UnavailableError
from keepwarm.loading import RuntimeSpec
from keepwarm.model import LeasedModel
from keepwarm.sources.filesystem import FilesystemSource, ModelListing

log = logging.getLogger("keepwarm.repository")


def budget_bytes(max_bytes: float | None) -> int | None:
    """``max_bytes`` as bytes: a number of bytes, or a share of RAM when in (0, 1]."""
    if max_bytes is None:
        return None
    if 0 < max_bytes <= 1:
        return int(max_bytes * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return int(max_bytes)


class Repository:
    """Serve every model of a repository directory, following new versions as they land.

    ``on_demand=False`` loads what each model's version policy wants; ``on_demand=True``
    loads a version on its first use and evicts idle ones under ``max_bytes`` (pinned
    models are loaded at once and never evicted). Use it as a context manager.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        poll_seconds: float = 1.0,
        max_bytes: float | None = None,
        max_models: int | None = None,
        on_demand: bool = False,
        load_timeout: float = 300.0,
        budget_timeout: float = 30.0,
        drain_timeout: float = 30.0,
        watch: bool = True,
        source: Any = None,
    ) -> None:
        self.root = os.fspath(root)
        self.poll_seconds = poll_seconds
        self.on_demand = on_demand
        self.drain_timeout = drain_timeout
        self._watch = watch
        self._source = source if source is not None else _make_source(self.root)
        self.manager = Manager(
            max_models=max_models,
            max_bytes=budget_bytes(max_bytes),
            load_timeout=load_timeout,
            budget_timeout=budget_timeout,
        )
        self._lock = threading.RLock()
        self._listing: dict[str, ModelListing] = {}
        self._specs: dict[ModelId, RuntimeSpec] = {}
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
            except Exception:  # a bad scan must not stop the loop; the next one retries
                log.exception("scanning %s failed", self.root)

    def _watch_loop(self) -> None:
        try:
            import watchfiles
        except ImportError:
            return  # polling alone
        try:
            for _changes in watchfiles.watch(
                self.root,
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
            gone = set(self._listing) - set(listing)
            self._listing = listing  # replaced whole, never mutated: readable without the lock
            for name in sorted(gone) + sorted(listing):
                self._reconcile_safely(name)

    def _on_event(self, event: Event) -> None:
        # A version became READY (or failed): old versions may now go, or must stay.
        if self._stop.is_set():
            return
        if event.kind == "state" and event.state in (State.READY, State.FAILED):
            key = event.key
            if isinstance(key, ModelId):
                with self._lock:
                    self._reconcile_safely(key.name)

    def _reconcile_safely(self, name: str) -> None:
        # One model that cannot load (no room in the budget, shutting down) must not stop
        # the others from being reconciled; the next scan tries again.
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
                    key = ModelId(name, version)
                    self.manager.ensure(key, self._spec(model, version), pinned=config.pinned)
            else:
                wanted |= available  # on demand: any listed version may be asked for
        for version in resident - wanted:
            self.manager.unload(ModelId(name, version), "no longer wanted")

    def _ready(self, name: str, model: ModelListing) -> set[int]:
        return {v for v in model.versions if self.manager.state(ModelId(name, v)) is State.READY}

    def _known(self, name: str) -> list[ModelId]:
        return [key for key in self._specs if key.name == name]

    def _spec(self, model: ModelListing, version: int) -> RuntimeSpec:
        config = model.config
        listing = model.versions[version]
        path = listing.path
        key = ModelId(model.name, version)
        spec = self._specs.get(key)
        if spec is None or spec.uri != str(path) or spec.config != config:
            samples = path / config.warmup_samples if config.warmup_samples else None
            spec = RuntimeSpec(
                str(path),
                runtime=config.runtime or listing.runtime,
                signature=config.signature,
                options=dict(config.options),
                warmup_runs=config.warmup_runs,
                warmup_file=samples,
                config=config,
            )
            self._specs[key] = spec
        return spec

    # ------------------------------------------------------------------ requests

    @contextmanager
    def lease(
        self, name: str, version: int | str | None = None, *, timeout: float | None = None
    ) -> Iterator[LeasedModel]:
        """Hold one version of ``name`` for the ``with`` block: ``version`` is a number, a
        label, or None for the default version (the highest READY one, or the label
        ``model.toml`` names)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for _attempt in range(3):
            key, spec = self._resolve(name, version)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                lease = self.manager.acquire(key, spec, timeout=remaining)
            except UnavailableError:
                continue  # it began draining between resolve and acquire: resolve again
            except ModelNotFoundError:
                if spec is None:
                    continue
                raise
            try:
                yield LeasedModel(lease.model, name, key.version)
            finally:
                lease.release()
            return
        raise UnavailableError(f"model {name!r} has no version ready to serve; retry later")

    def _resolve(self, name: str, version: int | str | None) -> tuple[ModelId, RuntimeSpec | None]:
        with self._lock:
            key, load = self._choose(self._listing, name, version)
            model = self._listing[name]
            return key, (self._spec(model, key.version) if load else None)

    def _choose(
        self, listing: dict[str, ModelListing], name: str, version: int | str | None
    ) -> tuple[ModelId, bool]:
        """The version a request gets, and whether it must be loaded on demand. Takes no
        lock (``wait_ready`` calls it under the manager's), so it is given the listing."""
        model = listing.get(name)
        if model is None:
            near = difflib.get_close_matches(name, list(listing), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ModelNotFoundError(
                f"model {name!r} not found in {self.root}{hint} "
                f"(models: {', '.join(sorted(listing)) or 'none'})"
            )
        config = model.config
        if model.blocked:
            raise UnavailableError(f"model {name!r} cannot be served: {self._why_not_ready(model)}")
        if self.on_demand and not config.pinned:
            available = {v for v, found in model.versions.items() if found.complete}
            return ModelId(name, resolve_version(version, available, config, model=name)), True
        ready = self._ready(name, model)
        if not ready and version is None:
            if not model.versions:
                raise ModelNotFoundError(
                    f"model {name!r} has no version to serve: no version directory in {model.path}"
                )
            raise UnavailableError(
                f"model {name!r} has no version ready yet: {self._why_not_ready(model)}"
            )
        chosen = resolve_version(
            version, ready, config, model=name, pending=set(model.versions) - ready
        )
        return ModelId(name, chosen), False

    def _why_not_ready(self, model: ModelListing) -> str:
        if model.config_error and model.blocked:
            return f"its model.toml is invalid: {model.config_error}"
        states = []
        for v, found in sorted(model.versions.items()):
            entry = self.manager.entry(ModelId(model.name, v))
            if entry is not None and entry.state is not State.NEW:
                why = f" ({entry.reason})" if entry.reason else ""
                states.append(f"version {v}: {entry.state.value}{why}")
            else:
                states.append(f"version {v}: WAITING ({found.reason or 'not loaded yet'})")
        return "; ".join(states) or "no versions on disk"

    # ------------------------------------------------------------------- queries

    def wait_ready(self, name: str, version: int | str | None = None, timeout: float = 60.0) -> int:
        """Wait until ``name`` (that version, or its default) can serve; return the version.

        In on-demand mode this loads the version (as a request would)."""
        if self.on_demand:
            config = self._listing[name].config if name in self._listing else None
            if config is None or not config.pinned:
                with self.lease(name, version, timeout=timeout) as model:
                    assert model.version is not None
                    return model.version
        found: list[int] = []

        def ready() -> bool:  # runs under the manager's lock: must not take ours
            try:
                key, _ = self._choose(self._listing, name, version)
            except (ModelNotFoundError, UnavailableError):
                return False
            if self.manager.state(key) is State.READY:
                found.append(key.version)
                return True
            return False

        if not self.manager.wait_for(ready, timeout):
            raise UnavailableError(
                f"model {name!r} (version {version}) was not ready within "
                f"{timeout:g} s; status: {self.status().get(name)}"
            )
        return found[-1]

    def status(self) -> dict[str, Any]:
        """Every model and version: state, reason, memory figures, and ``disk``: why its
        files are not taken (None when they are). A version on disk that was never loaded
        because its files are not taken is ``WAITING``."""
        snapshot = self.manager.snapshot()
        with self._lock:
            out: dict[str, Any] = {}
            for name, model in sorted(self._listing.items()):
                versions: dict[int, Any] = {}
                for version, listing in sorted(model.versions.items()):
                    info = dict(snapshot.get(ModelId(name, version), {"state": "UNLOADED"}))
                    info["disk"] = listing.reason  # why its files are not taken (None: taken)
                    if not listing.complete and info["state"] in ("NEW", "UNLOADED"):
                        info.update(state="WAITING", reason=listing.reason)
                    versions[version] = info
                for key, info in snapshot.items():
                    if (
                        isinstance(key, ModelId)
                        and key.name == name
                        and key.version not in versions
                    ):
                        versions[key.version] = info
                out[name] = {"config_error": model.config_error, "versions": versions}
            return out

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every state change; returns the unsubscribe function."""
        return self.manager.events.subscribe(callback)


def _make_source(root: str) -> Any:
    if "://" in root and not root.startswith("file://"):
        from keepwarm.sources.remote_repository import RemoteSource

        return RemoteSource(root)
    return FilesystemSource(Path(root.removeprefix("file://")))
