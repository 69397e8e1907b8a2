"""A request's model name and version as the transports give them: checked and parsed."""

from __future__ import annotations

import re

from keepwarm.errors import InvalidInputError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")  # as the repository's directories


def check_name(name: str, what: str = "model name") -> str:
    """Names are letters, digits, ``_``, ``-`` and ``.``: no separators, no ``..``."""
    if not _NAME.fullmatch(name) or ".." in name:
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise InvalidInputError(
            f"invalid {what} {shown!r}: use letters, digits, '_', '-' and '.' "
            "(starting with a letter or digit; no '/' and no '..'; at most 128 characters)"
        )
    return name


def parse_version(version: str | None) -> int | str | None:
    """``None`` or ``""``: the default version; ASCII digits: a version number; else a
    label (``str.isdigit`` alone also says yes to "²", which ``int`` refuses, and to
    Arabic-Indic digits, which it reads as another number)."""
    if version is None or version == "":
        return None
    if version.isascii() and version.isdigit():
        number = int(version)
        if number <= 0:
            raise InvalidInputError(f"version {version!r}: versions are positive integers")
        return number
    return check_name(version, "version label")
