"""A ``Repository``'s own arguments, checked before anything starts."""

from __future__ import annotations

import os

from keepwarm.errors import InvalidConfigError, InvalidInputError


def check_root(root: object) -> str:
    """``root`` as text, else InvalidInputError: an empty one named the working directory
    (``Path("")`` is ``.``), None or bytes raised TypeError."""
    text = root if type(root) is str else os.fspath(root) if isinstance(root, os.PathLike) else None
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(
            f"repository root {root!r}: expected a directory path or URL such as 'models', "
            "'file:///srv/models' or 's3://bucket/models'"
        )
    return text


def check_switch(name: str, value: object) -> None:
    """A keyword switch is a bool or None ('yes' was taken as the settings' text)."""
    if value is not None and type(value) is not bool:
        raise InvalidConfigError(f"{name}={value!r}: expected true or false (or None)")
