"""The keys of ``ModelCache``: what makes two ``keepwarm.load`` calls the same model.

The arguments are checked here, before anything is keyed on them: a key made of an empty
URI or of ``version=True`` (equal to, and hashed as, ``1``) would silently alias another.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from keepwarm.errors import InvalidConfigError, InvalidInputError
from keepwarm.sources.resolve import local_path_or_none


class CacheKey(NamedTuple):
    uri: str
    version: int | None
    runtime: str | None
    signature: str | None
    options: tuple[tuple[str, Any], ...]
    batching: Any = None  # keepwarm.load's batching=, frozen (None: model.toml decides)
    workers: Any = None  # keepwarm.load's workers=, frozen (None: model.toml decides)

    def __str__(self) -> str:
        return self.uri if self.version is None else f"{self.uri}@{self.version}"


def check_uri(uri: object) -> str:
    """``uri`` as text: a non-empty ``str`` or ``os.PathLike[str]``, else InvalidInputError.

    An empty string would otherwise name the working directory (``Path("")`` is ``.``)."""
    text = uri if type(uri) is str else _fspath(uri)
    if not text or text.isspace():
        raise InvalidInputError(
            f"model URI is empty ({uri!r}): expected a path or URL such as 'models/mlp/1', "
            "'file:///srv/models/mlp' or 's3://bucket/mlp'"
        )
    return text


def _fspath(uri: object) -> str:
    if isinstance(uri, os.PathLike):
        text = os.fspath(uri)
        if isinstance(text, str):
            return text
    raise InvalidInputError(
        f"model URI must be a str or an os.PathLike path, got {type(uri).__name__} ({uri!r})"
    )


def check_version(version: object) -> int | None:
    """A model version: None (the highest), a positive ``int``, or its decimal text ("1").

    Booleans are refused (``True == 1`` would share version 1's key and its failures), as
    are 0, negative numbers, floats and any other text, each with the reason."""
    if version is None or (type(version) is int and version > 0):
        return version
    if isinstance(version, bool):
        raise InvalidInputError(
            f"version={version!r}: expected a positive integer (or None for the highest "
            "version), not a boolean"
        )
    if isinstance(version, str):
        text = version.strip()
        if text.isascii() and text.isdigit() and not text.startswith("0"):
            return int(text)
        raise InvalidInputError(
            f"version={version!r}: expected a positive integer such as 1 or '1' "
            "(or None for the highest version)"
        )
    if isinstance(version, np.integer) and version > 0:
        return int(version)
    raise InvalidInputError(
        f"version={version!r} ({type(version).__name__}): expected a positive integer "
        "(or None for the highest version)"
    )


def canonical_uri(uri: str | os.PathLike[str]) -> str:
    """The cache key of a URI: a normalised absolute path for local models, else the URL."""
    local = local_path_or_none(uri)
    return os.fspath(uri) if local is None else os.path.abspath(local)


def freeze_options(
    options: Mapping[str, Any] | None, what: str = "options"
) -> tuple[tuple[str, Any], ...]:
    """A hashable form of ``options`` (the cache key includes it); ``what`` names the
    argument in errors. Values are frozen with their types, lists and tables recursively
    (tables in key order): keyed by ``repr``, a list ``[1]`` and the text ``"[1]"`` shared
    one key, and so one ``Model``, as did ``True`` and ``1``."""
    if options is None:
        return ()
    if not isinstance(options, Mapping):
        raise InvalidConfigError(
            f"{what}={options!r} ({type(options).__name__}): expected a table (a dict of "
            "names to values), or None"
        )
    if not all(isinstance(name, str) for name in options):
        raise InvalidConfigError(f"{what} keys must be strings, got {list(options)}")
    return tuple((name, _frozen(value)) for name, value in sorted(options.items()))


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda item: repr(item[0]))
        return ("table", tuple((repr(key), _frozen(item)) for key, item in items))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_frozen(item) for item in value))
    try:
        hash(value)
    except TypeError:
        return (type(value).__name__, repr(value))
    return (type(value).__name__, value)
