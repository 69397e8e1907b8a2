"""How the fields of a ``Settings`` section are declared: the size units of their
defaults, each field's parser carried in its metadata (``parsed_by``; the parsers are
``keepwarm.settings_values``'), and all of them parsed when the section is built
(``normalise``)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from keepwarm.settings_values import Expected, Parser, invalid

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def parsed_by(parse: Parser, *, secret: bool = False) -> dict[str, Any]:
    """A section field's metadata: its parser, and whether it is a secret (never shown)."""
    return {"parse": parse, "secret": secret}


def normalise(section: Any, name: str) -> None:
    """Parse every field of a freshly built section in place (frozen: via ``object``)."""
    for f in fields(section):
        value = getattr(section, f.name)
        try:
            parsed = f.metadata["parse"](value)
        except Expected as exc:
            raise invalid(f"{name}.{f.name}", value, str(exc)) from None
        object.__setattr__(section, f.name, parsed)
