"""One ``Settings``: every default of keepwarm, nested per concern, frozen.

Read from, lowest precedence first: the defaults below, a TOML file whose tables are the
sections (``Settings.load(file=...)``), ``KEEPWARM_*`` environment variables, and explicit
overrides (keyword arguments, command-line flags). A value means the same wherever it is
given; a bad one is an ``InvalidConfigError`` naming the setting, where it came from, the
value and what was expected. Nothing else in keepwarm reads the environment.

Environment variables: ``KEEPWARM_<SECTION>__<FIELD>`` (``KEEPWARM_SERVER__HTTP_PORT=9000``)
for every field, plus the short names in ``ALIASES`` (``KEEPWARM_MAX_BYTES``, ...). An
empty variable counts as unset; an unknown ``KEEPWARM_*`` variable is an error (a typo
must not pass silently).

Overrides: ``section__field=value`` (``budget__max_bytes="50%"``), the bare field name when
only one section has it (``max_bytes="50%"``), or ``section={"field": value}``. An
override of ``None`` means "not given" (so unset flags can be passed as they are).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from keepwarm.errors import InvalidConfigError
from keepwarm.settings_sections import (
    FIELDS,
    SECTIONS,
    BatchingSettings,
    BudgetSettings,
    DownloadSettings,
    LoadingSettings,
    RepositorySettings,
    ServerSettings,
    WarmupSettings,
    WorkerSettings,
)
from keepwarm.settings_values import Expected, invalid, parse_bytes

__all__ = [
    "ALIASES",
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
]

PREFIX = "KEEPWARM_"

#: Short environment variables, kept from before the sections (and the server's token).
ALIASES: dict[str, tuple[str, str]] = {
    "KEEPWARM_MAX_BYTES": ("budget", "max_bytes"),
    "KEEPWARM_MAX_MODELS": ("budget", "max_models"),
    "KEEPWARM_CACHE_DIR": ("downloads", "cache_dir"),
    "KEEPWARM_OFFLINE": ("downloads", "offline"),
    "KEEPWARM_CACHE_MAX_BYTES": ("downloads", "cache_max_bytes"),
    "KEEPWARM_MANAGEMENT_TOKEN": ("server", "management_token"),
}
#: grpcio's experiments for keepwarm's gRPC server unless ``GRPC_EXPERIMENTS`` is set: its
#: connections on grpcio's classic poller (one thread hand-off fewer per call; see
#: ``keepwarm.grpc``).
GRPC_EXPERIMENTS = "-event_engine_listener"
#: TensorFlow's inter-op threads in ``keepwarm serve`` unless ``TF_NUM_INTEROP_THREADS``
#: is set: the batcher already runs one model call per executor slot, and a second pool
#: of threads per call only adds hand-offs (MLP at concurrency 1, interleaved A/B: 0.83-0.88x
#: server CPU per request, 1.09-1.15x req/s; MobileNetV2 at 1 and 8 unchanged).
TF_INTER_OP_THREADS = "1"
_OWNERS: dict[str, list[str]] = {}
for _section, _fields in FIELDS.items():
    for _name in _fields:
        _OWNERS.setdefault(_name, []).append(_section)

_Values = dict[str, dict[str, Any]]


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
        values: _Values = {name: {} for name in SECTIONS}
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
    def _build(cls, values: _Values) -> Settings:
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


def _merge(values: _Values, more: _Values) -> None:
    for name, given in more.items():
        values[name].update(given)


def _parse(section: str, key: str, value: Any, label: str) -> Any:
    try:
        return FIELDS[section][key].metadata["parse"](value)
    except Expected as exc:
        raise invalid(label, value, str(exc)) from None


def _unknown(what: str, name: str, known: list[str], where: str) -> InvalidConfigError:
    near = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; known: {', '.join(known)}"
    return InvalidConfigError(f"unknown {what} {name!r}{where}{hint}")


def read_file(file: str | os.PathLike[str]) -> _Values:
    """The sections of a TOML settings file, parsed; errors name the file and the key."""
    path = Path(file)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise InvalidConfigError(f"settings file {path} cannot be read: {exc}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidConfigError(f"settings file {path} is not valid TOML: {exc}") from exc
    values: _Values = {name: {} for name in SECTIONS}
    for name, table in data.items():
        if name not in SECTIONS:
            raise _unknown("section", name, list(SECTIONS), f" in {path}")
        if not isinstance(table, dict):
            raise InvalidConfigError(
                f"{name} = {table!r} in {path}: expected a table [{name}] of settings"
            )
        for key, value in table.items():
            if key not in FIELDS[name]:
                known = [f"{name}.{k}" for k in FIELDS[name]]
                raise _unknown("key", f"{name}.{key}", known, f" in {path}")
            if FIELDS[name][key].metadata["secret"]:
                raise InvalidConfigError(
                    f"{name}.{key} in {path}: a secret is not read from a settings file; "
                    "set KEEPWARM_MANAGEMENT_TOKEN or server.token_file"
                )
            values[name][key] = _parse(name, key, value, f"{name}.{key} in {path}")
    return values


def read_environ(environ: Mapping[str, str]) -> _Values:
    """The ``KEEPWARM_*`` variables of ``environ``, parsed; empty ones count as unset."""
    values: _Values = {name: {} for name in SECTIONS}
    origin: dict[tuple[str, str], str] = {}
    for variable in sorted(environ):
        if not variable.upper().startswith(PREFIX):
            continue
        raw = environ[variable]
        if not raw.strip():
            continue
        target = _env_target(variable)
        parsed = _parse(*target, raw, variable)
        if target in origin and values[target[0]][target[1]] != parsed:
            other = origin[target]
            raise InvalidConfigError(
                f"{other}={environ[other]!r} and {variable}={raw!r} both set "
                f"{'.'.join(target)}: expected one of them, or the same value"
            )
        origin[target] = variable
        values[target[0]][target[1]] = parsed
    return values


def _env_target(variable: str) -> tuple[str, str]:
    upper = variable.upper()
    if upper in ALIASES:
        return ALIASES[upper]
    section, sep, key = upper[len(PREFIX) :].lower().partition("__")
    if sep and section in FIELDS and key in FIELDS[section]:
        return section, key
    known = [
        f"{PREFIX}{s.upper()}__{k.upper()}" for s, keys in FIELDS.items() for k in keys
    ] + list(ALIASES)
    raise _unknown("environment variable", variable, known, "")


def read_overrides(overrides: Mapping[str, Any]) -> _Values:
    """Keyword overrides, parsed (see the module docstring for their forms)."""
    values: _Values = {name: {} for name in SECTIONS}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in SECTIONS:
            if isinstance(value, SECTIONS[key]):
                values[key].update({f.name: getattr(value, f.name) for f in fields(value)})
                continue
            if not isinstance(value, Mapping):
                raise invalid(key, value, f"a {SECTIONS[key].__name__} or a mapping of its fields")
            for name, item in value.items():
                if item is not None:
                    values[key][name] = _override(key, str(name), item, f"{key}.{name}")
            continue
        section, sep, name = key.partition("__")
        if not sep:
            owners = _OWNERS.get(key, [])
            if len(owners) != 1:
                known = sorted(_OWNERS) + [f"{s}__{k}" for s in FIELDS for k in FIELDS[s]]
                raise _unknown("setting", key, known, "")
            section, name = owners[0], key
        values[section][name] = _override(section, name, value, key)
    return values


def _override(section: str, name: str, value: Any, label: str) -> Any:
    if section not in FIELDS or name not in FIELDS[section]:
        known = [f"{s}__{k}" for s in FIELDS for k in FIELDS[s]]
        raise _unknown("setting", label, known, "")
    return _parse(section, name, value, label)
