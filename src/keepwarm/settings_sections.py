"""The sections of ``Settings``, one frozen dataclass per concern, and every default;
``ServerSettings`` is ``keepwarm.settings_server``'s (listed here in ``SECTIONS``).

Each field carries its parser (``keepwarm.settings_fields``); a section parses its fields
when built, so ``BudgetSettings(max_bytes="50%")`` holds bytes, and a bad value raises
``InvalidConfigError`` naming ``section.field``. ``keepwarm.settings`` reads them from
files, the environment and arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from keepwarm.errors import InvalidConfigError
from keepwarm.settings_fields import GiB, MiB, normalise, parsed_by
from keepwarm.settings_server import ServerSettings
from keepwarm.settings_values import (
    bounded_bytes,
    integer,
    number,
    optional_bytes,
    optional_path,
    parse_bool,
)


@dataclass(frozen=True)
class BudgetSettings:
    """The memory budget of a cache or repository.

    ``max_bytes``: see ``parse_bytes``. ``budget_timeout``: how long a load waits for room
    before ``ResourceExhaustedError``. ``patience``: how long a load waits for a busy,
    less valued model to become evictable before it evicts a more valued idle one.
    """

    max_bytes: int | None = field(default=None, metadata=parsed_by(optional_bytes))
    max_models: int | None = field(default=None, metadata=parsed_by(integer(1, optional=True)))
    budget_timeout: float = field(default=30.0, metadata=parsed_by(number(0)))
    patience: float = field(default=1.0, metadata=parsed_by(number(0)))

    def __post_init__(self) -> None:
        normalise(self, "budget")


@dataclass(frozen=True)
class LoadingSettings:
    """``load_timeout``: a load still running after it is FAILED (it may return later).
    ``drain_timeout``: at close, how long leases may still run. ``retry_initial`` doubling
    up to ``retry_max``: the backoff after a failed load. ``allow_unsafe``: load formats
    that run code (pickle, Python models named by the model's files)."""

    load_timeout: float = field(default=300.0, metadata=parsed_by(number(0, above=True)))
    drain_timeout: float = field(default=30.0, metadata=parsed_by(number(0)))
    retry_initial: float = field(default=1.0, metadata=parsed_by(number(0, above=True)))
    retry_max: float = field(default=300.0, metadata=parsed_by(number(0)))
    allow_unsafe: bool = field(default=False, metadata=parsed_by(parse_bool))

    def __post_init__(self) -> None:
        normalise(self, "loading")
        if self.retry_max < self.retry_initial:
            raise InvalidConfigError(
                f"loading.retry_max={self.retry_max:g} is below "
                f"loading.retry_initial={self.retry_initial:g}: expected retry_max >= retry_initial"
            )


#: The largest ``max_batch_size`` (Settings and a model's ``[batching]``): every bucket up
#: to it is run once with generated rows at load, so 2**40 asked for terabytes on the
#: warmup thread (a MemoryError there, or the machine's memory spent) while the load
#: itself succeeded. A request with more rows than this still runs, in pieces.
MAX_BATCH_SIZE = 65_536
#: The most warmup runs (Settings and a model's ``[warmup]``): 10**9 kept each load
#: warming until its load timeout, then again after each backoff.
MAX_WARMUP_RUNS = 1000


@dataclass(frozen=True)
class WarmupSettings:
    """``runs``: warmup runs of a model whose own configuration does not say; 0 is off."""

    runs: int = field(default=3, metadata=parsed_by(integer(0, MAX_WARMUP_RUNS)))

    def __post_init__(self) -> None:
        normalise(self, "warmup")


@dataclass(frozen=True)
class RepositorySettings:
    """``poll_seconds`` between scans; ``watch`` the directory too (with watchfiles);
    ``on_demand``: load a version on its first request, not at once."""

    poll_seconds: float = field(default=1.0, metadata=parsed_by(number(0, above=True)))
    watch: bool = field(default=True, metadata=parsed_by(parse_bool))
    on_demand: bool = field(default=False, metadata=parsed_by(parse_bool))

    def __post_init__(self) -> None:
        normalise(self, "repository")


@dataclass(frozen=True)
class DownloadSettings:
    """The verified download cache (HTTP archives, TF Hub handles, remote stores).

    ``cache_dir``: None is the platform's user cache directory. ``offline``: never fetch,
    use only what is cached. ``cache_max_bytes``: a bound on the cache (least recently used
    entries that nothing uses are evicted). ``max_extract_bytes``: the most an archive may
    expand to. ``http_timeout``: seconds without data before a download fails.
    """

    cache_dir: Path | None = field(default=None, metadata=parsed_by(optional_path))
    offline: bool = field(default=False, metadata=parsed_by(parse_bool))
    cache_max_bytes: int | None = field(default=None, metadata=parsed_by(optional_bytes))
    max_extract_bytes: int = field(default=8 * GiB, metadata=parsed_by(bounded_bytes))
    http_timeout: float = field(default=60.0, metadata=parsed_by(number(0, above=True)))

    def __post_init__(self) -> None:
        normalise(self, "downloads")

    def directory(self) -> Path:
        """``cache_dir``, else the platform's user cache directory for keepwarm."""
        if self.cache_dir is not None:
            return self.cache_dir
        import platformdirs

        return Path(platformdirs.user_cache_dir("keepwarm"))


@dataclass(frozen=True)
class BatchingSettings:
    """Defaults for every model's batching; a model's ``[batching]`` table overrides them."""

    max_batch_size: int = field(default=32, metadata=parsed_by(integer(1, MAX_BATCH_SIZE)))
    max_delay_ms: float = field(default=5.0, metadata=parsed_by(number(0)))
    max_queue: int = field(default=256, metadata=parsed_by(integer(1)))

    def __post_init__(self) -> None:
        normalise(self, "batching")


@dataclass(frozen=True)
class WorkerSettings:
    """Worker processes (``keepwarm.workers``). ``isolate``: every model runs in a worker
    process of its own (server-wide; a model's ``[workers] isolate`` says it per model).
    ``max_restarts``: how many times in a row a model's worker may die (restarted each
    time, its models loaded again) before the version is FAILED; a successful call resets
    the count. ``buffer_bytes``: each worker's shared tensor buffer at start; it grows up to
    ``max_buffer_bytes`` (a request whose tensors need more is refused). ``start_timeout``:
    seconds a new worker may take to start and answer; a request waiting for a worker
    that restarts waits no longer than this (then UnavailableError). ``ready_timeout``:
    seconds a started worker may take to load its model; past it the worker is killed
    and the load fails (ModelLoadError). Its default is ``loading.load_timeout``'s: raise
    both for a model that takes longer.

    ``recycle_unreclaimed_bytes``: a worker whose unloads left this much behind is
    replaced, the new one loaded first (None: never). 256 MiB: four times the largest
    swing of PSS seen between MobileNetV2 cycles (so noise never triggers it), and below
    what a replacement costs (a process start and a framework import: TensorFlow is about
    400 MB). ``recycle_growth_bytes``: also replace a worker whose PSS grew this much past
    its PSS after its load (None, the default: TensorFlow keeps the memory of the largest
    batch it ran, about 480 MB for MobileNetV2 at 32, and would be replaced again and
    again; set it for a model that leaks while it serves). ``memory_check_seconds``: how
    often these are checked, at least every 0.1 s (reading a worker's PSS costs about 20 ms
    with TensorFlow: 1e-9 was accepted, a thread then reading them back to back)."""

    isolate: bool = field(default=False, metadata=parsed_by(parse_bool))
    max_restarts: int = field(default=3, metadata=parsed_by(integer(0)))
    buffer_bytes: int = field(default=4 * MiB, metadata=parsed_by(bounded_bytes))
    max_buffer_bytes: int = field(default=2 * GiB, metadata=parsed_by(bounded_bytes))
    start_timeout: float = field(default=60.0, metadata=parsed_by(number(0, above=True)))
    ready_timeout: float = field(
        default=LoadingSettings.load_timeout, metadata=parsed_by(number(0, above=True))
    )
    recycle_unreclaimed_bytes: int | None = field(
        default=256 * MiB, metadata=parsed_by(optional_bytes)
    )
    recycle_growth_bytes: int | None = field(default=None, metadata=parsed_by(optional_bytes))
    memory_check_seconds: float = field(default=10.0, metadata=parsed_by(number(0.1)))

    def __post_init__(self) -> None:
        normalise(self, "workers")
        if self.max_buffer_bytes < self.buffer_bytes:
            raise InvalidConfigError(
                f"workers.max_buffer_bytes={self.max_buffer_bytes} is below "
                f"workers.buffer_bytes={self.buffer_bytes}: expected max_buffer_bytes >= "
                "buffer_bytes"
            )


SECTIONS: dict[str, type[Any]] = {
    "budget": BudgetSettings,
    "loading": LoadingSettings,
    "warmup": WarmupSettings,
    "repository": RepositorySettings,
    "downloads": DownloadSettings,
    "server": ServerSettings,
    "batching": BatchingSettings,
    "workers": WorkerSettings,
}
FIELDS: dict[str, dict[str, Any]] = {
    name: {f.name: f for f in fields(cls)} for name, cls in SECTIONS.items()
}
