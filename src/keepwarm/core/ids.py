"""Identifiers of served versions."""

from __future__ import annotations

from typing import NamedTuple


class ModelId(NamedTuple):
    """A model name and a version (a positive integer)."""

    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"
