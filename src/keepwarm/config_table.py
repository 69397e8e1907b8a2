"""One table of a model.toml being read: typed getters whose errors name the file and key."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from keepwarm.errors import InvalidConfigError

EMPTY: Mapping[str, Any] = MappingProxyType({})
#: The largest configuration file read (model.toml is a few hundred bytes).
MAX_FILE_BYTES = 1 << 20


def read_config_file(path: Path) -> bytes:
    """The bytes of the regular file ``path``, at most ``MAX_FILE_BYTES``; else
    InvalidConfigError ("cannot be read: ..."). Opened without blocking and checked before
    it is read: whoever writes a repository could make it a FIFO (the scan waited for a
    writer) or a link to ``/dev/zero`` (read until memory ran out).
    ``FileNotFoundError`` when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InvalidConfigError(f"{path}: cannot be read: {exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidConfigError(f"{path}: cannot be read: not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidConfigError(f"{path}: cannot be read: {exc}") from exc
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidConfigError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return data


class TomlTable:
    """Reads one table of the file, raising errors that name the file and the key."""

    def __init__(
        self, source: str, table: Mapping[str, Any], prefix: str, allowed: tuple[str, ...]
    ) -> None:
        self.source, self.table, self.prefix = source, table, prefix
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
            names = ", ".join(repr(prefix + key) for key in unknown)
            raise InvalidConfigError(
                f"{source}: unknown key {names} in {where}; allowed keys: {', '.join(allowed)}"
            )

    def fail(self, key: str, expected: str, given: Any) -> InvalidConfigError:
        return self.error(key, f"expected {expected}, got {given!r}")

    def error(self, key: str, message: str) -> InvalidConfigError:
        """``message`` about ``key``, named with its file and table."""
        return InvalidConfigError(f"{self.source}: {self.prefix}{key}: {message}")

    def missing(self, key: str, expected: str) -> InvalidConfigError:
        """A required key left out."""
        return self.error(key, f"missing; expected {expected}")

    def get(self, key: str, kind: type | tuple[type, ...], expected: str) -> Any:
        value = self.table.get(key)
        if value is None:
            return None
        # bool is an int subclass: refuse `true` where a number is wanted, and vice versa.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.fail(key, expected, value)
        return value

    def text(self, key: str) -> str | None:
        value: str | None = self.get(key, str, "a non-empty string")
        if value is not None and not value.strip():
            raise self.fail(key, "a non-empty string", value)
        return value

    def integer(self, key: str, minimum: int, maximum: int | None = None) -> int | None:
        """``key``'s integer (None: absent), ``minimum`` to ``maximum``; one message for
        both bounds (0 processes was told ``>= 1``, 65 then ``from 1 to 64``)."""
        bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        expected = f"an integer {bound}"
        value: int | None = self.get(key, int, expected)
        if value is not None and (value < minimum or (maximum is not None and value > maximum)):
            raise self.fail(key, expected, value)
        return value

    def table_at(self, key: str, allowed: tuple[str, ...]) -> TomlTable:
        value = self.get(key, dict, "a table") or {}
        return TomlTable(self.source, value, f"{self.prefix}{key}.", allowed)


C = TypeVar("C")


def call_argument(
    value: Any,
    name: str,
    keys: Sequence[str],
    parse: Callable[[Mapping[str, Any]], C],
    kind: type[C],
) -> C | None:
    """A table argument of ``keepwarm.load`` (``batching=``, ``workers=``): None or False
    (None: off here, a model.toml may decide), True (the empty table), a config already
    parsed, or a table ``parse`` checks; anything else is an InvalidConfigError naming
    ``name`` and its ``keys``."""
    if value is None or value is False:
        return None
    if isinstance(value, kind):
        return value
    if value is True:
        return parse({})
    if not isinstance(value, Mapping):
        raise refused_argument(name, value, keys)
    return parse(value)


def refused_argument(name: str, value: Any, keys: Sequence[str]) -> InvalidConfigError:
    return InvalidConfigError(
        f"{name}={value!r}: expected True, False, None or a table of {name} settings "
        f"({', '.join(keys)})"
    )
