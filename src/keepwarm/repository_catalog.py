"""What a repository knows between scans: the listing in force, the specs its versions are
loaded with, and why a wanted version could not start loading; and, from these and the
manager's states, which version a request gets.

The listing is replaced whole at each successful scan, never mutated, so it is read
without a lock; ``specs`` and ``refused`` are changed under ``lock``.
"""

from __future__ import annotations

import difflib
import threading

from keepwarm.core.ids import ModelId
from keepwarm.core.manager import Manager
from keepwarm.core.states import State
from keepwarm.core.version_policy import resolve_version
from keepwarm.errors import InvalidInputError, ModelNotFoundError, UnavailableError
from keepwarm.load_description import LoadDescription
from keepwarm.loading import RuntimeSpec
from keepwarm.settings import Settings
from keepwarm.sources.listing import Listing, ModelListing

_IDLE = (State.NEW, State.UNLOADED)
_SETTLING = (State.LOADING, State.WARMING)


class Catalog:
    def __init__(self, manager: Manager, settings: Settings, *, location: str) -> None:
        self.manager = manager
        self.settings = settings
        self.location = location
        self.on_demand = settings.repository.on_demand
        self.lock = threading.RLock()
        self.listing: Listing = {}
        self.listing_error: str | None = None  # why the last scan failed; None: it worked
        self.specs: dict[ModelId, RuntimeSpec] = {}
        self.refused: dict[ModelId, str] = {}  # why a wanted version could not start loading

    def choose(self, name: str, version: int | str | None) -> tuple[ModelId, bool]:
        """The version a request gets, and whether it must be loaded on demand. Takes no
        lock (it runs inside the manager's waits). ``ModelNotFoundError`` when it does not
        exist; ``UnavailableError`` when it exists but cannot serve yet."""
        if type(name) is not str:  # None, 5 and b"m" raised TypeError from the look-up
            raise InvalidInputError(
                f"model name {name!r} ({type(name).__name__}): expected a string"
            )
        listing = self.listing
        model = listing.get(name)
        if model is None:
            near = difflib.get_close_matches(name, list(listing), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise ModelNotFoundError(
                f"model {name!r} not found in {self.location}{hint} "
                f"(models: {', '.join(sorted(listing)) or 'none'})"
            )
        config = model.config
        if model.blocked:
            raise UnavailableError(f"model {name!r} cannot be served: {self.why_not_ready(model)}")
        if self.on_demand and not config.pinned:
            available = {v for v, found in model.versions.items() if found.complete}
            waiting = set(model.versions) - available  # files not taken yet: worth a wait
            if version is None and not available and waiting:
                raise UnavailableError(
                    f"model {name!r} has no version ready yet: {self.why_not_ready(model)}"
                )
            chosen = resolve_version(version, available, config, model=name, pending=waiting)
            return ModelId(name, chosen), True
        ready = self.ready(model)
        if not ready and version is None:
            if not model.versions:
                raise ModelNotFoundError(
                    f"model {name!r} has no version to serve: no version directory in {model.path}"
                )
            raise UnavailableError(
                f"model {name!r} has no version ready yet: {self.why_not_ready(model)}"
            )
        chosen = resolve_version(
            version, ready, config, model=name, pending=set(model.versions) - ready
        )
        return ModelId(name, chosen), False

    def ready(self, model: ModelListing) -> set[int]:
        state = self.manager.state
        return {v for v in model.versions if state(ModelId(model.name, v)) is State.READY}

    def settling(self, name: str, version: int | str | None) -> bool:
        """Whether a version of ``name`` (that version, when a number is asked) may still
        become READY with no one asking: loading or warming, or on disk and not tried yet.
        A FAILED version retries only after its backoff: a request does not wait for it."""
        model = self.listing.get(name)
        if model is None:
            return False
        for v in model.versions:
            if isinstance(version, int) and v != version:
                continue
            key = ModelId(name, v)
            state = self.manager.state(key)
            if state in _SETTLING or (state in (None, State.NEW) and key not in self.refused):
                return True
        return False

    def why_not_ready(self, model: ModelListing) -> str:
        if model.config_error and model.blocked:
            return f"its model.toml is invalid: {model.config_error}"
        states = []
        for v, found in sorted(model.versions.items()):
            key = ModelId(model.name, v)
            entry = self.manager.entry(key)
            refused = self.refused.get(key)
            if refused is not None and (entry is None or entry.state in _IDLE):
                states.append(f"version {v}: not loaded ({refused})")
            elif entry is not None and entry.state is not State.NEW:
                why = f" ({entry.reason})" if entry.reason else ""
                states.append(f"version {v}: {entry.state.value}{why}")
            elif found.complete:
                states.append(f"version {v}: not loaded yet")
            else:
                states.append(f"version {v}: waiting for files ({found.reason})")
        return "; ".join(states) or "no versions on disk"

    def spec(self, model: ModelListing, version: int) -> RuntimeSpec:
        """The spec ``version`` is loaded with; the same object while nothing changed."""
        config = model.config
        listing = model.versions[version]
        path = listing.path
        key = ModelId(model.name, version)

        def current(spec: RuntimeSpec | None) -> bool:
            return (
                spec is not None
                and spec.uri == str(path)
                and spec.config == config
                and spec.nbytes == (listing.nbytes or None)
            )

        spec = self.specs.get(key)  # no lock when it is already made (a request's path)
        if current(spec):
            assert spec is not None
            return spec
        with self.lock:
            spec = self.specs.get(key)
            if current(spec):
                assert spec is not None
                return spec
            samples = path / config.warmup_samples if config.warmup_samples else None
            runs = config.warmup_runs
            described = LoadDescription(
                str(path),
                runtime=config.runtime or listing.runtime,
                signature=config.signature,
                options=config.options,
                allow_unsafe=self.settings.loading.allow_unsafe,  # a bool: Settings parsed it
                warmup_runs=self.settings.warmup.runs if runs is None else runs,
                warmup_file=samples,
                downloads=self.settings.downloads,
                optimize=None
                if config.optimize is None
                else {**config.optimize.to_plain(), "timeout": self.settings.loading.load_timeout},
            )
            # The size from the scan's own walk (0: not measured, sized at the load).
            batching, workers = config.batching, config.workers
            spec = self.specs[key] = RuntimeSpec(
                described,
                config=config,
                nbytes=listing.nbytes or None,
                batching=None
                if batching is None
                else batching.with_defaults(self.settings.batching),
                workers=None if workers is None else workers.with_defaults(self.settings.workers),
                worker_settings=self.settings.workers,
            )
            return spec
