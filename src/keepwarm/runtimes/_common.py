"""Small helpers shared by the built-in runtimes (framework-free)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from keepwarm.errors import ModelNotFoundError, UnavailableError
from keepwarm.signature import Shape

OBJECT = np.dtype(object)
_framework_lock = threading.Lock()


def import_framework(name: str) -> Any:
    """``import name``, one thread at a time. TensorFlow's first import is not thread-safe:
    two loads importing it at once (a SavedModel and a Keras model, say) can leave it
    half-initialised, and every later load in the process fails."""
    with _framework_lock:
        return importlib.import_module(name)


def find_file(path: Path, suffixes: Sequence[str], preferred: Iterable[str] = ()) -> Path | None:
    """``path`` itself when it is a file with one of ``suffixes``; in a directory, the
    first of ``preferred`` that exists, else the only file with one of ``suffixes``."""
    if path.is_file():
        return path if path.suffix.lower() in suffixes else None
    if not path.is_dir():
        return None
    for name in preferred:
        if (path / name).is_file():
            return path / name
    found = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    return found[0] if len(found) == 1 else None


def shape_of(dims: Sequence[Any] | None) -> Shape | None:
    """A keepwarm shape from framework dimensions: unknown or symbolic sizes become None."""
    if dims is None:
        return None
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in dims)


def closed(*_: Any, **__: Any) -> NoReturn:
    """Stands in for a model's call once it is closed."""
    raise UnavailableError("this model has been closed (unloaded)")


def output_names(candidates: Sequence[str | None], count: int) -> list[str]:
    """``candidates`` when they name every output uniquely, else ``output_0, output_1, ...``."""
    names = [c for c in candidates if c]
    if len(names) == count and len(set(names)) == count:
        return names
    return [f"output_{i}" for i in range(count)]


DEFAULT_SIGNATURE = "serving_default"


def check_signature(asked: str | None, available: str, where: object) -> None:
    """``ModelNotFoundError`` unless ``asked`` is None or the one signature a model has."""
    if asked is not None and asked != available:
        raise ModelNotFoundError(
            f"signature {asked!r} not found in {where}; available signatures: {available}"
        )
