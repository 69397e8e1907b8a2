"""What a runtime is: it recognises a path and loads it into a ``LoadedModel``.

Runtimes import their framework lazily, inside ``load``; importing this package never
imports TensorFlow or ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from keepwarm.signature import Signature


@runtime_checkable
class LoadedModel(Protocol):
    """A model in memory. ``predict`` takes inputs already checked by ``signature.coerce``."""

    signature: Signature
    nbytes: int
    nbytes_source: str  # "framework" (variables, initializers) or "files" (size on disk)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class Runtime(Protocol):
    """A model format. ``name`` is the registry key (``runtime=`` in ``keepwarm.load``)."""

    name: str
    #: Lower runs first when several runtimes recognise one path.
    priority: int
    #: True for formats that run code when loaded (refused unless ``allow_unsafe``).
    unsafe: bool

    def detect(self, path: Path) -> bool:
        """True when ``path`` (a file or a directory) holds this runtime's format."""
        ...

    def incomplete(self, path: Path) -> str | None:
        """Why ``path`` is not (yet) a whole model of this format, or None when complete.

        Cheap and framework-free: used to refuse half-copied versions.
        """
        ...

    def load(self, path: Path, *, signature: str | None, options: Mapping[str, Any]) -> LoadedModel:
        """Load ``path``. Raise ``ModelLoadError`` (cause chained) when it cannot."""
        ...


def files_nbytes(path: Path) -> int:
    """Total size of the files under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
