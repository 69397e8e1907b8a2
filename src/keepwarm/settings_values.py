"""How a setting's value is read: one parser per kind, the same from every source.

A parser takes what was given (a keyword argument, a TOML value, or an environment
variable's text) and returns the value, or raises ``Expected`` saying what it wanted; the
caller turns that into an ``InvalidConfigError`` naming the setting and where it came from.
Every parser accepts its own output, so parsing twice changes nothing.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keepwarm.errors import InvalidConfigError

Parser = Callable[[Any], Any]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NONE = frozenset({"none", "null", "unlimited"})

# Bare K/M/G/T and KiB/MiB/... are powers of 1024 (as systemd and Docker read them);
# KB/MB/GB/TB are powers of 1000 (SI). A plain number is bytes.
_UNITS = {
    "b": 1,
    **{p: 1024**i for i, p in enumerate("kmgt", 1)},
    **{f"{p}ib": 1024**i for i, p in enumerate("kmgt", 1)},
    **{f"{p}b": 1000**i for i, p in enumerate("kmgt", 1)},
}
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)$")
_PERCENT = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*%$")

_BYTES = "bytes (an integer such as 8589934592, or '8GiB', '512MB', '1.5G')"
_SHARE = "a share of RAM ('50%', or a number between 0 and 1 such as 0.5)"
BYTES_EXPECTED = f"{_BYTES}, {_SHARE}, or 'none' for no bound"


class Expected(ValueError):
    """Raised by a parser: the text says what the value should have been."""


def invalid(name: str, value: Any, expected: str) -> InvalidConfigError:
    """The error for a bad value: which setting (and from where), what was given, what
    was expected."""
    return InvalidConfigError(f"{name}={value!r}: expected {expected}")


def ram_bytes() -> int:
    """This machine's physical memory, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_bytes(value: Any, *, name: str = "size") -> int | None:
    """A size in bytes, or None (no bound): ``123``, ``"8GiB"``, ``"512MB"``, ``"1.5G"``,
    a share of RAM as ``"50%"`` or a float below 1 (``0.5``), or ``None``/``"none"``.

    Zero, negative numbers, booleans, non-integral numbers of bytes (``1.5``) and ``1.0``
    (one byte, or all of RAM?) are refused with ``InvalidConfigError`` naming ``name``.
    """
    try:
        return _bytes(value)
    except Expected as exc:
        raise invalid(name, value, str(exc)) from None


def _bytes(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise Expected(BYTES_EXPECTED)
    if isinstance(value, int):
        if value < 1:
            raise Expected(BYTES_EXPECTED)
        return value
    if isinstance(value, float):
        return _number_of_bytes(value)
    if not isinstance(value, str):
        raise Expected(BYTES_EXPECTED)
    text = value.strip().lower()
    if text in _NONE:
        return None
    percent = _PERCENT.match(text)
    if percent:
        share = float(percent.group(1)) / 100
        if not 0 < share <= 1:
            raise Expected(BYTES_EXPECTED)
        return _share_of_ram(share)
    size = _SIZE.match(text)
    if size is None or size.group(2) not in ("", *_UNITS):
        raise Expected(BYTES_EXPECTED)
    number, unit = size.group(1), size.group(2)
    if not unit:
        return _number_of_bytes(int(number) if number.isdigit() else float(number))
    nbytes = float(number) * _UNITS[unit]
    if nbytes < 1 or (unit == "b" and not nbytes.is_integer()):  # '1.5b' was 1 byte
        raise Expected(BYTES_EXPECTED)
    return int(nbytes)


def _number_of_bytes(value: float) -> int:
    if isinstance(value, int):
        if value < 1:
            raise Expected(BYTES_EXPECTED)
        return value
    if not math.isfinite(value) or value <= 0 or value == 1.0:
        raise Expected(BYTES_EXPECTED + ("; write '100%' for all of RAM" if value == 1 else ""))
    if value < 1:
        return _share_of_ram(value)
    if not value.is_integer():
        raise Expected(BYTES_EXPECTED)
    return int(value)


def _share_of_ram(share: float) -> int:
    return max(1, int(share * ram_bytes()))


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise Expected("true or false (also 1/0, yes/no, on/off)")


def integer(minimum: int, maximum: int | None = None, *, optional: bool = False) -> Parser:
    bound = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
    expected = f"an integer {bound}" + (", or none" if optional else "")

    def parse(value: Any) -> int | None:
        if optional and (value is None or _is_none_text(value)):
            return None
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Expected(expected)
        if value < minimum or (maximum is not None and value > maximum):
            raise Expected(expected)
        return value

    return parse


#: The most any number setting (durations all, in seconds or milliseconds) may be without
#: a maximum of its own: about 31 years. Threads wait in C types: a poll interval of 1e300
#: s killed the poll thread with an OverflowError.
MAX_NUMBER = 1e9


def number(
    minimum: float, *, above: bool = False, optional: bool = False, maximum: float | None = None
) -> Parser:
    """A finite float ``>= minimum`` (``> minimum`` when ``above``), at most ``maximum``
    (``MAX_NUMBER`` when not given)."""
    bound = f"{'>' if above else '>='} {minimum:g}"
    if maximum is not None:
        bound += f" and <= {maximum:g}"
    expected = f"a number {bound}" + (", or none" if optional else "")

    def parse(value: Any) -> float | None:
        if optional and (value is None or _is_none_text(value)):
            return None
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise Expected(expected) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Expected(expected)
        result = float(value)
        if not math.isfinite(result):  # 'inf' was told "expected a number >= 0"
            raise Expected(f"{expected} (a finite one)")
        if result < minimum or (above and result == minimum):
            raise Expected(expected)
        if maximum is not None and result > maximum:
            raise Expected(expected)
        if result > MAX_NUMBER:
            raise Expected(f"{expected} (at most {MAX_NUMBER:g})")
        return result

    return parse


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Expected("a non-empty string")
    return value.strip()


def optional_text(value: Any) -> str | None:
    return None if value is None else text(value)


def choice(*options: str) -> Parser:
    def parse(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise Expected(" or ".join(repr(option) for option in options))

    return parse


def optional_path(value: Any) -> Path | None:
    """A path (``~`` expanded, made absolute against the working directory), or None."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return Path(value.strip()).expanduser().absolute()
    if isinstance(value, os.PathLike) and os.fspath(value):
        return Path(value).expanduser().absolute()
    raise Expected("a path")


def optional_bytes(value: Any) -> int | None:
    return _bytes(value)


#: What a size that must be bounded takes: ``BYTES_EXPECTED`` without ``'none'``.
BOUNDED_BYTES_EXPECTED = f"{_BYTES} or {_SHARE}"


def bounded_bytes(value: Any) -> int:
    """A size as ``optional_bytes`` reads it, but never none: a limit that must hold (a
    body, an archive, a buffer). ``'none'`` was named as accepted by the error these
    settings gave, then refused without naming the flag or variable it came from."""
    try:
        nbytes = _bytes(value)
    except Expected as exc:
        raise Expected(str(exc).replace(BYTES_EXPECTED, BOUNDED_BYTES_EXPECTED)) from None
    if nbytes is None:
        raise Expected(BOUNDED_BYTES_EXPECTED)
    return nbytes


def size(minimum: int, maximum: int) -> Parser:
    """A number of bytes from ``minimum`` to ``maximum`` (an integer, or ``'64KiB'``...);
    not a share of RAM, not none."""
    expected = (
        f"a size in bytes from {minimum} to {maximum} (an integer such as {minimum}, or "
        "'64KiB', '1MiB')"
    )

    def parse(value: Any) -> int:
        if (isinstance(value, str) and "%" in value) or (isinstance(value, float) and value < 1):
            raise Expected(expected)
        try:
            nbytes = _bytes(value)
        except Expected:
            raise Expected(expected) from None
        if nbytes is None or not minimum <= nbytes <= maximum:
            raise Expected(expected)
        return nbytes

    return parse


def _is_none_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in _NONE
