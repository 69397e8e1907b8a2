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
from keepwarm.core.manager import Manager
from keepwarm.core.memory import budget_bytes
from keepwarm.core.policy import EvictionPolicy
from keepwarm.errors import InvalidConfigError
from keepwarm.loading import spec_from_call
from keepwarm.model import LeasedModel, Model


class ModelCache:
    """A process-wide, thread-safe, load-at-most-once cache of models.

    ``max_models`` / ``max_bytes`` bound it; the eviction policy (frequency-aware by
    default) never unloads a model inside ``predict`` or a ``lease``. When no room can be
    made before ``budget_timeout`` seconds pass, the load raises ``ResourceExhaustedError``.
    ``on_access(key, hit)`` is called (under the cache's lock: keep it tiny) for every
    request, in the order the cache admitted them: a hit when it is leased, a miss when the
    load it started (or joined) begins; a request waiting for room is not yet admitted.
    """

    def __init__(
        self,
        max_models: int | None = None,
        max_bytes: int | None = None,
        *,
        policy: EvictionPolicy | None = None,
        load_timeout: float = 300.0,
        budget_timeout: float = 30.0,
        warmup: bool = True,
        on_access: Callable[[Hashable, bool], None] | None = None,
    ) -> None:
        self.manager = Manager(
            max_models=max_models,
            max_bytes=max_bytes,
            policy=policy,
            load_timeout=load_timeout,
            budget_timeout=budget_timeout,
            on_access=on_access,
        )
        self._warmup = warmup
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
    ) -> Model:
        """The ``Model`` for ``uri``, loaded at most once; the same arguments give the same
        ``Model``. Raises the typed error of a failed load (retried only after a backoff)."""
        model = self.handle(
            uri, version=version, runtime=runtime, signature=signature, options=options
        )
        model._ensure()
        return model

    def handle(
        self,
        uri: str | os.PathLike[str],
        *,
        version: int | str | None = None,
        runtime: str | None = None,
        signature: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Model:
        """The ``Model`` for these arguments, without loading it."""
        text = check_uri(uri)
        version = check_version(version)  # before keying: True == 1 would alias version 1
        frozen = freeze_options(options)
        # The fast path keys on the spelling; a relative path also on the working directory.
        base = "" if _absolute(text) else os.getcwd()
        args = (base, text, version, runtime, signature, frozen)
        model = self._handles.get(args)
        if model is not None:
            return model
        key = CacheKey(canonical_uri(text), version, runtime, signature, frozen)
        with self._lock:
            model = self._by_key.get(key)
            if model is None:
                spec = spec_from_call(
                    key.uri,
                    version=version,
                    runtime=runtime,
                    signature=signature,
                    options=options,
                    warmup_runs=3 if self._warmup else 0,
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
    ) -> Iterator[LeasedModel]:
        """Hold the model in memory for the ``with`` block: it is not evicted meanwhile."""
        model = self.handle(
            uri, version=version, runtime=runtime, signature=signature, options=options
        )
        lease = self.manager.acquire(model._key, model._spec, timeout=timeout)
        try:
            yield LeasedModel(lease.model, str(model.uri), model.version)
        finally:
            lease.release()

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
        for key, info in self.manager.snapshot().items():
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

    def close(self, drain_timeout: float = 30.0) -> None:
        self.manager.close(drain_timeout)


def _absolute(text: str) -> bool:
    return text.startswith("/") or "://" in text


_default_lock = threading.Lock()
_default: ModelCache | None = None


def _env_number(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidConfigError(
            f"{name}={value!r}: expected a number (bytes, or a share of RAM such as 0.5)"
        ) from None


def default_cache() -> ModelCache:
    """The process-wide cache behind ``keepwarm.load`` (bounded by ``KEEPWARM_MAX_MODELS``
    and ``KEEPWARM_MAX_BYTES`` when set; bytes, or a share of RAM such as ``0.5``)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                max_models = _env_number("KEEPWARM_MAX_MODELS")
                _default = ModelCache(
                    max_models=None if max_models is None else int(max_models),
                    max_bytes=budget_bytes(_env_number("KEEPWARM_MAX_BYTES")),
                )
    return _default


def load(
    uri: str | os.PathLike[str],
    *,
    version: int | str | None = None,
    runtime: str | None = None,
    signature: str | None = None,
    options: Mapping[str, Any] | None = None,
    cache: ModelCache | None = None,
) -> Model:
    """Load ``uri`` at most once per process (per cache) and return its ``Model``.

    ``uri``: a SavedModel directory, a Keras ``.keras``/``.h5`` file, an ``.onnx`` file, a
    Python model directory, a ``file://`` or ``http(s)://`` TF Hub handle (``.tar.gz``),
    or a versioned model directory (``version`` picks one; the highest by default).
    ``version`` is a positive integer or its decimal text (``"1"``); booleans, zero,
    negative numbers and floats are refused with ``InvalidInputError``, as is an empty URI.
    """
    return (cache or default_cache()).load(
        uri, version=version, runtime=runtime, signature=signature, options=options
    )
