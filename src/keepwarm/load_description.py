"""A load as plain, picklable data: what a worker process receives and a restart replays."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.cache_keys import check_uri, check_version
from keepwarm.errors import InvalidConfigError
from keepwarm.settings import DownloadSettings, WarmupSettings

_FIELDS_NOT_OPTIONS = ("class", "allow_unsafe")  # explicit fields of a description
# Plain values: JSON's, plus TOML's dates and times (model.toml [options] may hold them).
_PLAIN = (str, int, float, bool, type(None), datetime.date, datetime.time)


@dataclass(frozen=True)
class LoadDescription:
    """One load as plain data. ``options`` go to the runtime and hold plain values only
    (str, numbers, bool, None, and lists and str-keyed dicts of them); ``python_class``
    is ``"module:qualname"``; ``allow_unsafe`` lets formats that run code load."""

    uri: str
    version: int | None = None
    runtime: str | None = None
    signature: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    allow_unsafe: bool = False
    python_class: str | None = None
    warmup_runs: int = WarmupSettings.runs
    warmup_file: Path | None = None  # sample requests stored with the version (.npz, .json)
    downloads: DownloadSettings | None = None  # the download cache; None: the environment's
    # model.toml's [optimize] as plain data (``OptimizeConfig.to_plain``, plus ``timeout``,
    # the load timeout in seconds): convert at load
    optimize: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "uri", check_uri(self.uri))
        object.__setattr__(self, "version", check_version(self.version))
        for name in ("runtime", "signature"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidConfigError(f"{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.options, Mapping):
            raise InvalidConfigError(f"options must be a mapping, got {self.options!r}")
        for name in _FIELDS_NOT_OPTIONS:
            if name in self.options:
                field_name = "python_class" if name == "class" else name
                raise InvalidConfigError(
                    f"options[{name!r}]: give it as the description's {field_name} field"
                )
        object.__setattr__(self, "options", _plain(dict(self.options), "options"))
        if type(self.allow_unsafe) is not bool:
            raise InvalidConfigError(
                f"allow_unsafe must be True or False, got {self.allow_unsafe!r}"
            )
        if self.python_class is not None:
            check_class_name(self.python_class)
        if type(self.warmup_runs) is not int or self.warmup_runs < 0:
            raise InvalidConfigError(
                f"warmup_runs must be an integer >= 0, got {self.warmup_runs!r}"
            )
        if self.warmup_file is not None:
            object.__setattr__(self, "warmup_file", Path(self.warmup_file))
        if self.downloads is not None and not isinstance(self.downloads, DownloadSettings):
            raise InvalidConfigError(
                f"downloads must be a DownloadSettings or None, got {self.downloads!r}"
            )
        if self.optimize is not None:
            if not isinstance(self.optimize, Mapping):
                raise InvalidConfigError(f"optimize must be a mapping, got {self.optimize!r}")
            object.__setattr__(self, "optimize", _plain(dict(self.optimize), "optimize"))


def _plain(value: Any, where: str) -> Any:
    """A copy of ``value`` when it is plain data, else InvalidConfigError naming ``where``."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, np.generic):  # a numpy scalar: its Python value (np.int64(2) -> 2)
        return _plain(value.item(), where)
    if isinstance(value, list | tuple):
        return type(value)(_plain(item, f"{where}[{i}]") for i, item in enumerate(value))
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise InvalidConfigError(f"{where}: keys must be strings, got {list(value)}")
        return {key: _plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    hint = "; a model's class is given as options['class']" if isinstance(value, type) else ""
    raise InvalidConfigError(
        f"{where} must be plain data (str, number, bool, None, list, dict), got "
        f"{type(value).__name__} {value!r}: a load is described by values a worker process "
        f"can receive{hint}"
    )


def check_class_name(name: object) -> str:
    """``name`` when it reads ``"module:qualname"``, else InvalidConfigError."""
    if isinstance(name, str):
        module, _, qualname = name.partition(":")
        if module and qualname and ":" not in qualname and " " not in name:
            return name
    raise InvalidConfigError(f"a Python model class is named 'module:qualname', got {name!r}")


def class_name(cls: type) -> str:
    """How ``cls`` is named across a process boundary."""
    return f"{cls.__module__}:{cls.__qualname__}"
