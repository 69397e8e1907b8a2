"""The sections of ``Settings``, one frozen dataclass per concern, and every default.

Each field carries its parser (``keepwarm.settings_values``); a section parses its fields
when built, so ``BudgetSettings(max_bytes="50%")`` holds bytes, and a bad value raises
``InvalidConfigError`` naming ``section.field``. ``keepwarm.settings`` reads them from
files, the environment and arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from keepwarm.errors import InvalidConfigError
from keepwarm.settings_values import (
    Expected,
    Parser,
    choice,
    integer,
    invalid,
    number,
    optional_bytes,
    optional_path,
    optional_text,
    parse_bool,
    size,
    text,
)

GiB = 1 << 30
MiB = 1 << 20
#: The most ``server.processes`` allowed anywhere (the supervisor also refuses more than
#: four per core of the machine it runs on).
MAX_PROCESSES = 64
#: The longest a connection's limits (``server.*_timeout``) may be: one day.
MAX_TIMEOUT = 86400.0
KiB = 1 << 10


def _seconds() -> dict[str, Any]:
    return _p(number(0, above=True, maximum=MAX_TIMEOUT))


def _normalise(section: Any, name: str) -> None:
    """Parse every field of a freshly built section in place (frozen: via ``object``)."""
    for f in fields(section):
        value = getattr(section, f.name)
        try:
            parsed = f.metadata["parse"](value)
        except Expected as exc:
            raise invalid(f"{name}.{f.name}", value, str(exc)) from None
        object.__setattr__(section, f.name, parsed)


def _p(parse: Parser, *, secret: bool = False) -> dict[str, Any]:
    return {"parse": parse, "secret": secret}


@dataclass(frozen=True)
class BudgetSettings:
    """The memory budget of a cache or repository.

    ``max_bytes``: see ``parse_bytes``. ``budget_timeout``: how long a load waits for room
    before ``ResourceExhaustedError``. ``patience``: how long a load waits for a busy,
    less valued model to become evictable before it evicts a more valued idle one.
    """

    max_bytes: int | None = field(default=None, metadata=_p(optional_bytes))
    max_models: int | None = field(default=None, metadata=_p(integer(1, optional=True)))
    budget_timeout: float = field(default=30.0, metadata=_p(number(0)))
    patience: float = field(default=1.0, metadata=_p(number(0)))

    def __post_init__(self) -> None:
        _normalise(self, "budget")


@dataclass(frozen=True)
class LoadingSettings:
    """``load_timeout``: a load still running after it is FAILED (it may return later).
    ``drain_timeout``: at close, how long leases may still run. ``retry_initial`` doubling
    up to ``retry_max``: the backoff after a failed load. ``allow_unsafe``: load formats
    that run code (pickle, Python models named by the model's files)."""

    load_timeout: float = field(default=300.0, metadata=_p(number(0, above=True)))
    drain_timeout: float = field(default=30.0, metadata=_p(number(0)))
    retry_initial: float = field(default=1.0, metadata=_p(number(0, above=True)))
    retry_max: float = field(default=300.0, metadata=_p(number(0)))
    allow_unsafe: bool = field(default=False, metadata=_p(parse_bool))

    def __post_init__(self) -> None:
        _normalise(self, "loading")
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

    runs: int = field(default=3, metadata=_p(integer(0, MAX_WARMUP_RUNS)))

    def __post_init__(self) -> None:
        _normalise(self, "warmup")


@dataclass(frozen=True)
class RepositorySettings:
    """``poll_seconds`` between scans; ``watch`` the directory too (with watchfiles);
    ``on_demand``: load a version on its first request, not at once."""

    poll_seconds: float = field(default=1.0, metadata=_p(number(0, above=True)))
    watch: bool = field(default=True, metadata=_p(parse_bool))
    on_demand: bool = field(default=False, metadata=_p(parse_bool))

    def __post_init__(self) -> None:
        _normalise(self, "repository")


@dataclass(frozen=True)
class DownloadSettings:
    """The verified download cache (HTTP archives, TF Hub handles, remote stores).

    ``cache_dir``: None is the platform's user cache directory. ``offline``: never fetch,
    use only what is cached. ``cache_max_bytes``: a bound on the cache (least recently used
    entries that nothing uses are evicted). ``max_extract_bytes``: the most an archive may
    expand to. ``http_timeout``: seconds without data before a download fails.
    """

    cache_dir: Path | None = field(default=None, metadata=_p(optional_path))
    offline: bool = field(default=False, metadata=_p(parse_bool))
    cache_max_bytes: int | None = field(default=None, metadata=_p(optional_bytes))
    max_extract_bytes: int = field(default=8 * GiB, metadata=_p(optional_bytes))
    http_timeout: float = field(default=60.0, metadata=_p(number(0, above=True)))

    def __post_init__(self) -> None:
        _normalise(self, "downloads")
        if self.max_extract_bytes is None:
            raise invalid("downloads.max_extract_bytes", None, "a size in bytes")

    def directory(self) -> Path:
        """``cache_dir``, else the platform's user cache directory for keepwarm."""
        if self.cache_dir is not None:
            return self.cache_dir
        import platformdirs

        return Path(platformdirs.user_cache_dir("keepwarm"))


@dataclass(frozen=True)
class ServerSettings:
    """The server (``keepwarm serve``). Ports may be 0 (any free port). ``max_body_bytes``
    bounds request bodies, also after decompression. ``management_token`` is read only from
    the environment (``KEEPWARM_MANAGEMENT_TOKEN``), never from a file or shown.
    ``processes``: server processes sharing the ports (``keepwarm.supervisor``); 1 is one
    process, no supervisor. ``model_nice``: the threads that run models run at this nice
    value above the server's (``keepwarm.thread_priority``; Linux), under ``model_policy``
    (``normal``, ``batch``, ``idle``): the event loop then takes a core from them at once.
    Off (0, ``normal``) by default: a lowered model also yields to the machine's other work
    (MobileNetV2 under overload on 2 shared cores: 503s' p99 120 -> 84 ms at 19, but 0.73x
    the requests served; at the issue's overload cell's rate, 19, ``idle`` and ``batch`` +
    19 cut it in one run of two and cost 0.6-0.9x of its throughput at 32 clients).
    ``model_priority_scope``: which model threads are lowered: ``all`` (the runtime's
    pools and the batch executor's threads) or ``runtime`` (the runtime's pools only; the
    executor's threads, which run Python between the runtime's calls, keep the server's;
    at 19, the overload cell's 503s' p99 22 -> 11 ms at 4x, 0.92-0.98x the throughput at
    32 clients on the shared machine).

    A connection's limits (``keepwarm.http.timers``): closed when idle for
    ``keep_alive_timeout`` seconds (also before its first request); 408 to a header block
    not whole ``header_timeout`` seconds after its first byte, or to a body from which no
    byte came for ``body_timeout`` seconds; 431 to a header block over
    ``max_header_bytes`` (1 KiB to 16 MiB); dropped when its answers cannot be sent (the
    client reads none of them) for ``write_timeout`` seconds. Timeouts are above 0 and at
    most a day."""

    host: str = field(default="127.0.0.1", metadata=_p(text))
    http_port: int = field(default=8501, metadata=_p(integer(0, 65535)))
    grpc_port: int = field(default=8500, metadata=_p(integer(0, 65535)))
    max_body_bytes: int = field(default=64 * MiB, metadata=_p(optional_bytes))
    max_json_depth: int = field(default=64, metadata=_p(integer(1)))
    request_timeout_ms: float | None = field(
        default=None, metadata=_p(number(0, above=True, optional=True))
    )
    management_api: bool = field(default=False, metadata=_p(parse_bool))
    management_token: str | None = field(
        default=None, repr=False, metadata=_p(optional_text, secret=True)
    )
    token_file: Path | None = field(default=None, metadata=_p(optional_path))
    tls_cert: Path | None = field(default=None, metadata=_p(optional_path))
    tls_key: Path | None = field(default=None, metadata=_p(optional_path))
    model_control: str = field(default="poll", metadata=_p(choice("poll", "explicit")))
    strict_readiness: bool = field(default=False, metadata=_p(parse_bool))
    processes: int = field(default=1, metadata=_p(integer(1, MAX_PROCESSES)))
    model_nice: int = field(default=0, metadata=_p(integer(0, 19)))
    model_policy: str = field(default="normal", metadata=_p(choice("normal", "batch", "idle")))
    model_priority_scope: str = field(default="all", metadata=_p(choice("all", "runtime")))
    keep_alive_timeout: float = field(default=5.0, metadata=_seconds())
    header_timeout: float = field(default=30.0, metadata=_seconds())
    body_timeout: float = field(default=30.0, metadata=_seconds())
    max_header_bytes: int = field(default=64 * KiB, metadata=_p(size(1 * KiB, 16 * MiB)))
    write_timeout: float = field(default=30.0, metadata=_seconds())

    def __post_init__(self) -> None:
        _normalise(self, "server")
        if self.max_body_bytes is None:
            raise invalid("server.max_body_bytes", None, "a size in bytes")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidConfigError(
                "server.tls_cert and server.tls_key: expected both or neither, got only "
                + ("tls_cert" if self.tls_key is None else "tls_key")
            )
        if self.http_port == self.grpc_port != 0:
            raise InvalidConfigError(
                f"server.http_port and server.grpc_port are both {self.http_port}: expected "
                "two different ports (or 0 for any free one)"
            )


@dataclass(frozen=True)
class BatchingSettings:
    """Defaults for every model's batching; a model's ``[batching]`` table overrides them."""

    max_batch_size: int = field(default=32, metadata=_p(integer(1, MAX_BATCH_SIZE)))
    max_delay_ms: float = field(default=5.0, metadata=_p(number(0)))
    max_queue: int = field(default=256, metadata=_p(integer(1)))

    def __post_init__(self) -> None:
        _normalise(self, "batching")


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
    often these are checked (reading a worker's PSS costs about 20 ms with TensorFlow)."""

    isolate: bool = field(default=False, metadata=_p(parse_bool))
    max_restarts: int = field(default=3, metadata=_p(integer(0)))
    buffer_bytes: int = field(default=4 * MiB, metadata=_p(optional_bytes))
    max_buffer_bytes: int = field(default=2 * GiB, metadata=_p(optional_bytes))
    start_timeout: float = field(default=60.0, metadata=_p(number(0, above=True)))
    ready_timeout: float = field(
        default=LoadingSettings.load_timeout, metadata=_p(number(0, above=True))
    )
    recycle_unreclaimed_bytes: int | None = field(default=256 * MiB, metadata=_p(optional_bytes))
    recycle_growth_bytes: int | None = field(default=None, metadata=_p(optional_bytes))
    memory_check_seconds: float = field(default=10.0, metadata=_p(number(0, above=True)))

    def __post_init__(self) -> None:
        _normalise(self, "workers")
        for name in ("buffer_bytes", "max_buffer_bytes"):
            if getattr(self, name) is None:
                raise invalid(f"workers.{name}", None, "a size in bytes")
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
