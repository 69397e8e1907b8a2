"""Where ``Settings`` values come from, each parsed as it is read: a TOML settings file
(``read_file``), ``KEEPWARM_*`` environment variables (``read_environ``, with the short
names in ``ALIASES``) and keyword overrides (``read_overrides``); ``keepwarm.settings``
says their forms and merges them. Errors name the setting, where it came from and what
was expected, and suggest the nearest known name for an unknown one."""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from keepwarm.errors import InvalidConfigError
from keepwarm.settings_sections import FIELDS, SECTIONS
from keepwarm.settings_values import Expected, invalid

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

_OWNERS: dict[str, list[str]] = {}
for _section, _fields in FIELDS.items():
    for _name in _fields:
        _OWNERS.setdefault(_name, []).append(_section)

#: Parsed values by section, then field.
Values = dict[str, dict[str, Any]]


def _parse(section: str, key: str, value: Any, label: str) -> Any:
    try:
        return FIELDS[section][key].metadata["parse"](value)
    except Expected as exc:
        raise invalid(label, value, str(exc)) from None


def _unknown(what: str, name: str, known: list[str], where: str) -> InvalidConfigError:
    near = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; known: {', '.join(known)}"
    return InvalidConfigError(f"unknown {what} {name!r}{where}{hint}")


def read_file(file: str | os.PathLike[str]) -> Values:
    """The sections of a TOML settings file, parsed; errors name the file and the key."""
    path = Path(file)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise InvalidConfigError(f"settings file {path} cannot be read: {exc}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidConfigError(f"settings file {path} is not valid TOML: {exc}") from exc
    values: Values = {name: {} for name in SECTIONS}
    for name, table in data.items():
        if name not in SECTIONS and len(_OWNERS.get(name, ())) == 1:  # a key with no table
            section = _OWNERS[name][0]
            raise InvalidConfigError(
                f"{name} = {table!r} in {path} is outside any section: expected it under "
                f"[{section}] ({section}.{name})"
            )
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


def read_environ(environ: Mapping[str, str]) -> Values:
    """The ``KEEPWARM_*`` variables of ``environ``, parsed; empty ones count as unset."""
    values: Values = {name: {} for name in SECTIONS}
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


def read_overrides(overrides: Mapping[str, Any]) -> Values:
    """Keyword overrides, parsed (``keepwarm.settings``' docstring says their forms)."""
    values: Values = {name: {} for name in SECTIONS}
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
