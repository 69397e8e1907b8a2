"""``ModelCache`` and ``keepwarm.load``: a manager whose source is the URIs asked for."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from keepwarm.cache_keys import (
    CacheKey,
    canonical_uri,
    check_uri,
    check_version,
    freeze_options,
)
from keepwarm.config_batching import BATCHING_KEYS
from keepwarm.config_table import refused_argument
from keepwarm.config_workers import WORKERS_KEYS
from keepwarm.core.manager import Manager
from keepwarm.core.policy import EvictionPolicy
from keepwarm.errors import InvalidConfigError
from keepwarm.loading import spec_from_call
from keepwarm.model import LeasedModel, Model
from keepwarm.settings import Settings


class ModelCache:
    """A process-wide, thread-safe, load-at-most-once cache of models.

    ``settings`` (``Settings.from_env()`` when None) gives every default; the keyword
    arguments override its fields (None: the settings' value). ``max_models`` /
    ``max_bytes`` bound it (``max_bytes``: bytes, ``"8GiB"``, or a share of RAM such as
    ``0.5`` or ``"50%"``); the eviction policy (frequency-aware by default) never unloads
    a model inside ``predict`` or a ``lease``. When no room can be made before
    ``budget_timeout`` seconds pass, the load raises ``ResourceExhaustedError``.
    ``on_access(key, hit)`` is called (under the cache's lock: keep it tiny) for every
    request, in the order the cache admitted them: a hit when it is leased, a miss when the
    load it started (or joined) begins; a request waiting for room is not yet admitted.
    """

    def __init__(
        self,
        max_models: int | None = None,
        max_bytes: int | float | str | None = None,
        *,
        settings: Settings | None = None,
        policy: EvictionPolicy | None = None,
        load_timeout: float | None = None,
        budget_timeout: float | None = None,
        warmup: bool | None = None,
        on_access: Callable[[Hashable, bool], None] | None = None,
    ) -> None:
        if warmup is not None and not isinstance(warmup, bool):
            raise InvalidConfigError(f"warmup={warmup!r}: expected True, False or None")
        if policy is not None and not all(
            callable(getattr(policy, name, None)) for name in ("record", "victim", "prefer_keeping")
        ):
            raise InvalidConfigError(
                f"policy={policy!r}: expected an EvictionPolicy (record, victim and "
                "prefer_keeping methods; keepwarm.core.policy), or None"
            )
        if on_access is not None and not callable(on_access):
            raise InvalidConfigError(
                f"on_access={on_access!r}: expected a callable on_access(key, hit), or None"
            )
        self.settings = Settings.given(
            settings,
            max_models=max_models,
            max_bytes=max_bytes,
            load_timeout=load_timeout,
            budget_timeout=budget_timeout,
            warmup__runs=0 if warmup is False else None,  # True: the settings' runs
        )
        self.manager = Manager.from_settings(self.settings, policy=policy, on_access=on_access)
        self._lock = threading.Lock()
        self._handles: dict[tuple[Any, ...], Model] = {}
        self._by_key: dict[CacheKey, Model] = {}

    def load(
        self,
        uri: str | os.PathLike[str],
        *,
        version: int | str | None = None,
        runtime: str | None = None,
        signature: str | None = None,
        options: Mapping[str, Any] | None = None,
        batching: bool | Mapping[str, Any] | None = None,
        workers: bool | Mapping[str, Any] | None = None,
    ) -> Model:
        """The ``Model`` for ``uri``, loaded at most once; the same arguments give the same
        ``Model``. Raises the typed error of a failed load (retried only after a backoff).
        ``batching``, ``workers``: see ``keepwarm.load``."""
        model = self.handle(
            uri,
            version=version,
            runtime=runtime,
            signature=signature,
            options=options,
            batching=batching,
            workers=workers,
        )
        model.ensure_loaded()
        return model

    def handle(
        self,
        uri: str | os.PathLike[str],
        *,
        version: int | str | None = None,
        runtime: str | None = None,
        signature: str | None = None,
        options: Mapping[str, Any] | None = None,
        batching: bool | Mapping[str, Any] | None = None,
        workers: bool | Mapping[str, Any] | None = None,
    ) -> Model:
        """The ``Model`` for these arguments, without loading it."""
        text = check_uri(uri)
        version = check_version(version)  # before keying: True == 1 would alias version 1
        frozen = freeze_options(options)
        batched = batching if batching is None or type(batching) is bool else _frozen(batching)
        in_workers = (
            workers if workers is None or type(workers) is bool else _frozen(workers, "workers")
        )
        # The fast path keys on the spelling; a relative path also on the working directory.
        base = "" if _absolute(text) else os.getcwd()
        args = (base, text, version, runtime, signature, frozen, batched, in_workers)
        model = self._handles.get(args)
        if model is not None:
            return model
        key = CacheKey(
            canonical_uri(text), version, runtime, signature, frozen, batched, in_workers
        )
        with self._lock:
            model = self._by_key.get(key)
            if model is None:
                spec = spec_from_call(
                    key.uri,
                    version=version,
                    runtime=runtime,
                    signature=signature,
                    options=options,
                    warmup_runs=self.settings.warmup.runs,
                    downloads=self.settings.downloads,
                    batching=batching,
                    batching_defaults=self.settings.batching,
                    workers=workers,
                    worker_settings=self.settings.workers,
                )
                model = self._by_key[key] = Model(self.manager, key, spec)
            self._handles[args] = model
        return model

    @contextmanager
    def lease(
        self,
        uri: str | os.PathLike[str],
        *,
        version: int | str | None = None,
        runtime: str | None = None,
        signature: str | None = None,
        options: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        batching: bool | Mapping[str, Any] | None = None,
        workers: bool | Mapping[str, Any] | None = None,
    ) -> Iterator[LeasedModel]:
        """Hold the model in memory for the ``with`` block: it is not evicted meanwhile."""
        model = self.handle(
            uri,
            version=version,
            runtime=runtime,
            signature=signature,
            options=options,
            batching=batching,
            workers=workers,
        )
        with model.acquire(timeout=timeout) as leased:
            yield leased

    def evict(self, uri: str | os.PathLike[str]) -> bool:
        """Unload every cached variant of ``uri`` (after their current users finish)."""
        target = canonical_uri(check_uri(uri))
        with self._lock:
            keys = [key for key in self._by_key if key.uri == target]
        return any([self.manager.unload(key, "evicted by request") for key in keys])

    def clear(self) -> None:
        """Unload every model (each after its current users finish)."""
        with self._lock:
            keys = list(self._by_key)
        for key in keys:
            self.manager.unload(key, "cleared")

    def stats(self) -> dict[str, Any]:
        counters = dict(self.manager.counters)
        nbytes, count = self.manager.used()
        models = {}
        for key, status in self.manager.snapshot().items():
            info = status.to_dict()
            model = self._by_key.get(key)  # type: ignore[call-overload]
            info["format"] = model.format if model is not None else None
            models[str(key)] = info
        return {
            **counters,
            "load_seconds": round(self.manager.load_seconds, 4),
            "bytes": nbytes,
            "loaded": count,
            "max_bytes": self.manager.max_bytes,
            "max_models": self.manager.max_models,
            "models": models,
        }

    def close(self, drain_timeout: float | None = None) -> None:
        """Unload every model, waiting up to ``drain_timeout`` (default: the settings')
        for leases to end."""
        timeout = self.settings.loading.drain_timeout if drain_timeout is None else drain_timeout
        self.manager.close(timeout)


def _frozen(table: Any, what: str = "batching") -> Any:
    """A ``batching=`` (or ``workers=``) table as a key (hashable), or InvalidConfigError."""
    if not isinstance(table, Mapping):
        keys = BATCHING_KEYS if what == "batching" else WORKERS_KEYS
        raise refused_argument(what, table, keys)
    return freeze_options(table, what)


def _absolute(text: str) -> bool:
    return text.startswith("/") or "://" in text


_default_lock = threading.Lock()
_default: ModelCache | None = None


def default_cache() -> ModelCache:
    """The process-wide cache behind ``keepwarm.load``, made on first use with the
    settings of the environment then (``Settings.from_env()``: ``KEEPWARM_MAX_BYTES``,
    ``KEEPWARM_MAX_MODELS``, ...)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = ModelCache()
    return _default


def load(
    uri: str | os.PathLike[str],
    *,
    version: int | str | None = None,
    runtime: str | None = None,
    signature: str | None = None,
    options: Mapping[str, Any] | None = None,
    cache: ModelCache | None = None,
    batching: bool | Mapping[str, Any] | None = None,
    workers: bool | Mapping[str, Any] | None = None,
) -> Model:
    """Load ``uri`` at most once per process (per cache) and return its ``Model``.

    ``uri``: a SavedModel directory, a Keras ``.keras``/``.h5`` file, an ``.onnx`` file, a
    Python model directory, an ``http(s)://`` archive or TF Hub handle (``.tar.gz``; a
    local archive is not unpacked), or a versioned model directory (``version`` picks one;
    the highest by default).
    ``version`` is a positive integer or its decimal text (``"1"``); booleans, zero,
    negative numbers and floats are refused with ``InvalidInputError``, as is an empty URI.

    ``batching``: concurrent ``predict`` calls of the same shape run as one batch (see
    ``keepwarm.config``, ``[batching]``). Off unless turned on: True (the defaults of
    ``Settings.batching``), a table (``{"max_batch_size": 16, "max_delay_ms": 2}``), or
    a ``model.toml`` with a ``[batching]`` table beside the model's versions (when
    ``batching`` is None); False turns it off whatever model.toml says.

    ``workers``: ``predict`` runs in worker processes (see ``keepwarm.config_workers``):
    True (one process), a table (``{"processes": 2}``), a ``model.toml`` with a
    ``[workers]`` table (when None), or ``Settings.workers.isolate``; False keeps the model
    in this process whatever model.toml or the settings say.
    """
    return (cache or default_cache()).load(
        uri,
        version=version,
        runtime=runtime,
        signature=signature,
        options=options,
        batching=batching,
        workers=workers,
    )
