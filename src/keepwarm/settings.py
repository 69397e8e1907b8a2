"""One ``Settings``: every default of keepwarm, nested per concern, frozen.

Read from, lowest precedence first: the defaults below, a TOML file whose tables are the
sections (``Settings.load(file=...)``), ``KEEPWARM_*`` environment variables, and explicit
overrides (keyword arguments, command-line flags), each read by ``keepwarm.settings_sources``.
A value means the same wherever it is given; a bad one is an ``InvalidConfigError`` naming
the setting, where it came from, the value and what was expected. Nothing else in
keepwarm reads the environment.

Environment variables: ``KEEPWARM_<SECTION>__<FIELD>`` (``KEEPWARM_SERVER__HTTP_PORT=9000``)
for every field, plus the short names in ``ALIASES`` (``KEEPWARM_MAX_BYTES``, ...). An
empty variable counts as unset; an unknown ``KEEPWARM_*`` variable is an error (a typo
must not pass silently).

Overrides: ``section__field=value`` (``budget__max_bytes="50%"``), the bare field name when
only one section has it (``max_bytes="50%"``), or ``section={"field": value}``. An
override of ``None`` means "not given" (so unset flags can be passed as they are).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from keepwarm.settings_sections import (
    SECTIONS,
    BatchingSettings,
    BudgetSettings,
    DownloadSettings,
    LoadingSettings,
    RepositorySettings,
    WarmupSettings,
    WorkerSettings,
)
from keepwarm.settings_server import ServerSettings
from keepwarm.settings_sources import (
    ALIASES,
    PREFIX,
    Values,
    read_environ,
    read_file,
    read_overrides,
)
from keepwarm.settings_values import invalid, parse_bytes

__all__ = [
    "ALIASES",
    "PREFIX",
    "BatchingSettings",
    "BudgetSettings",
    "DownloadSettings",
    "LoadingSettings",
    "RepositorySettings",
    "ServerSettings",
    "Settings",
    "WarmupSettings",
    "WorkerSettings",
    "parse_bytes",
    "read_environ",
    "read_file",
    "read_overrides",
]

#: grpcio's experiments for keepwarm's gRPC server unless ``GRPC_EXPERIMENTS`` is set: its
#: connections on grpcio's classic poller (one thread hand-off fewer per call; see
#: ``keepwarm.grpc``).
GRPC_EXPERIMENTS = "-event_engine_listener"
#: TensorFlow's inter-op threads in ``keepwarm serve`` unless ``TF_NUM_INTEROP_THREADS``
#: is set: the batcher already runs one model call per executor slot, and a second pool
#: of threads per call only adds hand-offs (MLP at concurrency 1, interleaved A/B: 0.83-0.88x
#: server CPU per request, 1.09-1.15x req/s; MobileNetV2 at 1 and 8 unchanged).
TF_INTER_OP_THREADS = "1"


def grpc_experiments(environ: MutableMapping[str, str] | None = None) -> str:
    """``GRPC_EXPERIMENTS`` (in ``os.environ`` unless given) set to ``GRPC_EXPERIMENTS``
    unless it is set already; returns the value in force. grpcio reads the variable once,
    when it is imported: call this before."""
    target = os.environ if environ is None else environ
    return target.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)


def tensorflow_threads(environ: MutableMapping[str, str] | None = None) -> str:
    """``TF_NUM_INTEROP_THREADS`` (in ``os.environ`` unless given) set to
    ``TF_INTER_OP_THREADS`` unless it is set already; returns the value in force.
    TensorFlow reads it when its runtime starts: call this before the first load."""
    target = os.environ if environ is None else environ
    return target.setdefault("TF_NUM_INTEROP_THREADS", TF_INTER_OP_THREADS)


def tensorflow_intra_threads(
    processes: int, environ: MutableMapping[str, str] | None = None, cores: int | None = None
) -> str:
    """``TF_NUM_INTRAOP_THREADS`` (in ``os.environ`` unless given) set to the machine's
    cores divided among ``processes`` server processes (at least 1) unless it is set
    already; returns the value in force. Each process's TensorFlow otherwise takes every
    core for one operator, and N such pools contend (MobileNetV2 at concurrency 32 on 2
    cores, 2 processes, interleaved A/B: 1 thread each 1.30x req/s, 0.96x CPU per request
    against one process; TensorFlow's default 1.14x, 1.10x). Call it before the
    processes start: they inherit it."""
    target = os.environ if environ is None else environ
    share = max(1, (cores or os.cpu_count() or 1) // processes)
    return target.setdefault("TF_NUM_INTRAOP_THREADS", str(share))


@dataclass(frozen=True)
class Settings:
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    loading: LoadingSettings = field(default_factory=LoadingSettings)
    warmup: WarmupSettings = field(default_factory=WarmupSettings)
    repository: RepositorySettings = field(default_factory=RepositorySettings)
    downloads: DownloadSettings = field(default_factory=DownloadSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    batching: BatchingSettings = field(default_factory=BatchingSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The defaults, then ``KEEPWARM_*`` variables (``os.environ`` unless given), then
        ``overrides``."""
        return cls.load(None, environ, overrides)

    @classmethod
    def load(
        cls,
        file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        **more: Any,
    ) -> Settings:
        """defaults < ``file`` (TOML) < environment < ``overrides`` and ``more``."""
        values: Values = {name: {} for name in SECTIONS}
        if file is not None:
            _merge(values, read_file(file))
        _merge(values, read_environ(os.environ if environ is None else environ))
        _merge(values, read_overrides({**(overrides or {}), **more}))
        return cls._build(values)

    @classmethod
    def given(cls, settings: Settings | None, /, **overrides: Any) -> Settings:
        """What a constructor taking ``settings=`` uses: ``settings`` (``from_env()`` when
        None) with the constructor's keyword ``overrides`` applied (None: not given)."""
        if settings is None:
            settings = cls.from_env()
        elif not isinstance(settings, Settings):
            raise invalid("settings", settings, "a keepwarm.Settings, or None")
        return settings.override(overrides)

    def override(self, overrides: Mapping[str, Any] | None = None, **more: Any) -> Settings:
        """A copy with ``overrides`` applied (same forms as ``load``; None: not given)."""
        parsed = read_overrides({**(overrides or {}), **more})
        if not any(parsed.values()):
            return self
        return replace(
            self,
            **{name: replace(getattr(self, name), **given) for name, given in parsed.items()},
        )

    @classmethod
    def _build(cls, values: Values) -> Settings:
        return cls(**{name: SECTIONS[name](**values[name]) for name in SECTIONS})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain values for logs and JSON (paths as text; the token shown as set or not)."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTIONS:
            section = getattr(self, name)
            out[name] = {}
            for f in fields(section):
                value = getattr(section, f.name)
                if f.metadata["secret"]:
                    value = None if value is None else "(set)"
                out[name][f.name] = str(value) if isinstance(value, Path) else value
        return out


def _merge(values: Values, more: Values) -> None:
    for name, given in more.items():
        values[name].update(given)
