"""The request side of a ``Repository``: which version a request gets, leases, waiting
for a version, and status. ``Repository`` (in ``keepwarm.repository``) adds the scans and
the reconciliation that keep the manager's table in line with the listing.

State shared with the reconciliation: the listing (replaced whole at each scan, never
mutated, so readable without the lock), the specs the versions are loaded with, and the
reasons a wanted version was refused before it could start loading.
"""

from __future__ import annotations

import difflib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from keepwarm.core.events import Event
from keepwarm.core.ids import ModelId
from keepwarm.core.manager import Manager
from keepwarm.core.states import State
from keepwarm.core.version_policy import resolve_version
from keepwarm.errors import KeepwarmError, ModelNotFoundError, UnavailableError
from keepwarm.loading import LoadDescription, RuntimeSpec
from keepwarm.model import LeasedModel
from keepwarm.settings import Settings
from keepwarm.sources.filesystem import ModelListing


class RepositoryView:
    """Requests and queries over a repository's listing and manager (see the module)."""

    root: str
    settings: Settings
    on_demand: bool
    allow_unsafe: bool
    manager: Manager
    _lock: threading.RLock
    _listing: dict[str, ModelListing]
    _specs: dict[ModelId, RuntimeSpec]
    _refused: dict[ModelId, str]  # why a wanted version could not start loading

    # ------------------------------------------------------------------ requests

    @contextmanager
    def lease(
        self, name: str, version: int | str | None = None, *, timeout: float | None = None
    ) -> Iterator[LeasedModel]:
        """Hold one version of ``name`` for the ``with`` block: ``version`` is a number, a
        label, or None for the default version (the highest READY one, or the label
        ``model.toml`` names)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: KeepwarmError | None = None
        for _attempt in range(3):
            key, spec = self._resolve(name, version)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                lease = self.manager.acquire(key, spec, timeout=remaining)
            except UnavailableError as exc:
                last = exc  # it began draining between resolve and acquire: resolve again
                continue
            except ModelNotFoundError as exc:
                if spec is None:
                    last = exc
                    continue
                raise
            try:
                yield LeasedModel(lease.model, name, key.version)
            finally:
                lease.release()
            return
        if isinstance(last, UnavailableError):
            raise last  # e.g. "shutting down": its own words, not a generic retry hint
        why = f" ({last.message})" if last is not None else ""
        raise UnavailableError(f"model {name!r} has no version ready to serve{why}; retry later")

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
            key = ModelId(model.name, v)
            entry = self.manager.entry(key)
            refused = self._refused.get(key)
            if refused is not None and (entry is None or entry.state in _IDLE):
                states.append(f"version {v}: not loaded ({refused})")
            elif entry is not None and entry.state is not State.NEW:
                why = f" ({entry.reason})" if entry.reason else ""
                states.append(f"version {v}: {entry.state.value}{why}")
            else:
                states.append(f"version {v}: WAITING ({found.reason or 'not loaded yet'})")
        return "; ".join(states) or "no versions on disk"

    def _ready(self, name: str, model: ModelListing) -> set[int]:
        return {v for v in model.versions if self.manager.state(ModelId(name, v)) is State.READY}

    def _spec(self, model: ModelListing, version: int) -> RuntimeSpec:
        """The spec ``version`` is loaded with; the same object while nothing changed."""
        config = model.config
        listing = model.versions[version]
        path = listing.path
        key = ModelId(model.name, version)
        spec = self._specs.get(key)
        if spec is None or spec.uri != str(path) or spec.config != config:
            samples = path / config.warmup_samples if config.warmup_samples else None
            described = LoadDescription(
                str(path),
                runtime=config.runtime or listing.runtime,
                signature=config.signature,
                options=config.options,
                allow_unsafe=self.allow_unsafe,  # a bool: Settings parsed it
                warmup_runs=(
                    self.settings.warmup.runs if config.warmup_runs is None else config.warmup_runs
                ),
                warmup_file=samples,
                downloads=self.settings.downloads,
            )
            batching = config.batching
            spec = RuntimeSpec(
                described,
                config=config,
                batching=None
                if batching is None
                else batching.with_defaults(self.settings.batching),
            )
            self._specs[key] = spec
        return spec

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
        """Every model and version: state, reason, memory figures; ``disk``: why its files
        are not taken (None when they are); ``refused``: why the version, though wanted,
        could not start loading (e.g. larger than the whole memory budget; None when it
        was not refused). A version on disk never loaded because its files are not taken
        is ``WAITING``. A version gone from disk is listed until it has unloaded."""
        snapshot = self.manager.snapshot()
        with self._lock:
            out: dict[str, Any] = {}
            for name, model in sorted(self._listing.items()):
                versions: dict[int, Any] = {}
                for version, listing in sorted(model.versions.items()):
                    key = ModelId(name, version)
                    info = dict(snapshot.get(key, {"state": "UNLOADED"}))
                    info["disk"] = listing.reason  # why its files are not taken (None: taken)
                    info["refused"] = refused = self._refused.get(key)
                    if not listing.complete and info["state"] in ("NEW", "UNLOADED"):
                        info.update(state="WAITING", reason=listing.reason)
                    elif refused is not None and info["state"] in ("NEW", "UNLOADED"):
                        info["reason"] = refused
                    versions[version] = info
                for other, info in snapshot.items():
                    if (
                        isinstance(other, ModelId)
                        and other.name == name
                        and other.version not in versions
                    ):
                        versions[other.version] = {**info, "disk": _GONE, "refused": None}
                out[name] = {"config_error": model.config_error, "versions": versions}
            return out

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every state change; returns the unsubscribe function."""
        return self.manager.events.subscribe(callback)


_IDLE = (State.NEW, State.UNLOADED)
_GONE = "no longer on disk; listed until it has unloaded"
