"""keepwarm: load a model once, keep it warm, serve it from anywhere.

The names below the errors are imported on first use (``keepwarm.load`` brings the model
cache, numpy and the loading machinery): ``python -m keepwarm serve`` starts loading
TensorFlow's native libraries before it imports them (``keepwarm.preload``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keepwarm.errors import (
    DeadlineExceededError,
    DownloadError,
    InternalError,
    InvalidConfigError,
    InvalidInputError,
    KeepwarmError,
    ModelLoadError,
    ModelNotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    UnsafeFormatError,
)

if TYPE_CHECKING:
    from keepwarm.cache import ModelCache, load
    from keepwarm.model import LeasedModel, Model
    from keepwarm.repository import Repository
    from keepwarm.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "DeadlineExceededError",
    "DownloadError",
    "InternalError",
    "InvalidConfigError",
    "InvalidInputError",
    "KeepwarmError",
    "LeasedModel",
    "Model",
    "ModelCache",
    "ModelLoadError",
    "ModelNotFoundError",
    "Repository",
    "ResourceExhaustedError",
    "Settings",
    "UnavailableError",
    "UnsafeFormatError",
    "load",
]

_LAZY = {
    "ModelCache": "keepwarm.cache",
    "load": "keepwarm.cache",
    "LeasedModel": "keepwarm.model",
    "Model": "keepwarm.model",
    "Repository": "keepwarm.repository",
    "Settings": "keepwarm.settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keepwarm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found here from now on, without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
